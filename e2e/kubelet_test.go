package e2e

import (
	"cmp"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The Docker "kubelet": a Pod's spec is proved by running its container
// with the Docker engine as a kubelet would run it with containerd, with
// the whole CLI around it, besides the real kubelet's run where the host
// has one (server/kubernetes_kubelet_test.go). podToDocker is the
// translation. It follows the
// spec and nothing else: every field of the Pod that reaches the container
// (image, command, args, env, mounts, resources, security context, working
// directory, host name, grace period) is translated, the scheduling fields
// (affinity, tolerations, node selector, priority) are the scheduler's and
// left out, and any other field set in the spec is refused by name, so that
// a change of the backend's Pod the translation cannot run fails the test
// instead of being dropped.

// dockerPod is how the Docker engine runs the only container of a Pod.
type dockerPod struct {
	Name        string // dockershim's name: k8s_CONTAINER_POD_NAMESPACE_UID_0
	Config      *container.Config
	Host        *container.HostConfig
	StopTimeout int // seconds between SIGTERM and SIGKILL: the Pod's grace period
}

// Labels the kubelet's Docker runtime (dockershim) put on a Pod's container.
const (
	labelPodName      = "io.kubernetes.pod.name"
	labelPodNamespace = "io.kubernetes.pod.namespace"
	labelPodUID       = "io.kubernetes.pod.uid"
	labelContainer    = "io.kubernetes.container.name"
)

// podToDocker translates a bound Pod (spec.nodeName set) of one container
// into the Docker engine's create request, resolving secretKeyRef from
// secrets (by name) as the kubelet does. It refuses what it cannot express
// faithfully, naming the field.
func podToDocker(pod *corev1.Pod, secrets map[string]*corev1.Secret) (dockerPod, error) {
	fail := func(format string, a ...any) (dockerPod, error) {
		return dockerPod{}, fmt.Errorf("pod %s/%s: "+format, append([]any{pod.Namespace, pod.Name}, a...)...)
	}
	spec := pod.Spec
	if spec.NodeName == "" {
		return fail("not bound to a node: the kubelet runs only Pods the scheduler placed")
	}
	if len(spec.Containers) != 1 {
		return fail("%d containers; the translation runs one", len(spec.Containers))
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		// The kubelet would mount a projected service account token at
		// /var/run/secrets/kubernetes.io/serviceaccount: the job could
		// reach the API server as the Pod.
		return fail("automountServiceAccountToken is not false: the kubelet would mount the service account's token, which this translation cannot make")
	}
	if left := setFields(spec, "Containers", "Volumes", "RestartPolicy", "TerminationGracePeriodSeconds",
		"SecurityContext", "Hostname", "AutomountServiceAccountToken", "EnableServiceLinks", "DNSPolicy",
		// The scheduler's, not the kubelet's:
		"NodeName", "Affinity", "Tolerations", "NodeSelector", "SchedulerName", "Priority",
		"PriorityClassName", "PreemptionPolicy", "TopologySpreadConstraints",
		// The API server's defaults, with no effect on the container:
		"ServiceAccountName", "DeprecatedServiceAccount"); len(left) > 0 {
		return fail("spec.%s set: the translation does not run it", strings.Join(left, ", spec."))
	}
	if spec.DNSPolicy != "" && spec.DNSPolicy != corev1.DNSClusterFirst && spec.DNSPolicy != corev1.DNSDefault {
		return fail("dnsPolicy %s: the translation gives the engine's resolver (the cluster's DNS, ClusterFirst, is that of the node here)", spec.DNSPolicy)
	}
	c := spec.Containers[0]
	if left := setFields(c, "Name", "Image", "Command", "Args", "Env", "Resources", "VolumeMounts",
		"WorkingDir", "SecurityContext", "ImagePullPolicy",
		// The kubelet's file for the termination message: not the job's.
		"TerminationMessagePath", "TerminationMessagePolicy"); len(left) > 0 {
		return fail("container %s has %s set: the translation does not run it", c.Name, strings.Join(left, ", "))
	}
	if c.ImagePullPolicy == corev1.PullAlways {
		return fail("imagePullPolicy Always: no registry here; the image must be on the node")
	}

	// The environment: env in order, $(VAR) expanded against the entries
	// before it; command and args expanded against all of it. The image's
	// own ENV stays under it, as with containerd.
	var env []string
	vars := map[string]string{}
	for _, ev := range c.Env {
		v := ev.Value
		switch src := ev.ValueFrom; {
		case src == nil:
			v = expand(v, vars)
		case src.SecretKeyRef != nil:
			s, ok := secrets[src.SecretKeyRef.Name]
			if !ok {
				// The kubelet waits for it (CreateContainerConfigError).
				return fail("env %s: secret %q not found", ev.Name, src.SecretKeyRef.Name)
			}
			b, ok := s.Data[src.SecretKeyRef.Key]
			if !ok {
				return fail("env %s: secret %q has no key %q", ev.Name, src.SecretKeyRef.Name, src.SecretKeyRef.Key)
			}
			v = string(b)
		case src.FieldRef != nil:
			switch src.FieldRef.FieldPath {
			case "spec.nodeName":
				v = spec.NodeName
			case "metadata.name":
				v = pod.Name
			case "metadata.namespace":
				v = pod.Namespace
			case "metadata.uid":
				v = string(pod.UID)
			case "spec.serviceAccountName":
				v = spec.ServiceAccountName
			default:
				return fail("env %s: fieldRef %s is not translated", ev.Name, src.FieldRef.FieldPath)
			}
		default:
			return fail("env %s: only value, secretKeyRef and fieldRef are translated", ev.Name)
		}
		vars[ev.Name] = v
		env = append(env, ev.Name+"="+v)
	}
	expandAll := func(ss []string) []string {
		if ss == nil {
			return nil
		}
		out := make([]string, len(ss))
		for i, s := range ss {
			out[i] = expand(s, vars)
		}
		return out
	}

	host := &container.HostConfig{}
	cfg := &container.Config{
		Image: c.Image,
		// Command replaces the image's ENTRYPOINT and drops its CMD; args
		// alone keep the ENTRYPOINT. The engine does the same with
		// Entrypoint and Cmd.
		Entrypoint: expandAll(c.Command),
		Cmd:        expandAll(c.Args),
		Env:        env,
		WorkingDir: c.WorkingDir,
		// The kubelet names the container's host after the Pod.
		Hostname: cmp.Or(spec.Hostname, pod.Name),
		Labels: map[string]string{
			labelPodName: pod.Name, labelPodNamespace: pod.Namespace,
			labelPodUID: string(pod.UID), labelContainer: c.Name,
		},
	}

	// Restart policy: the Pod's, for its container.
	switch spec.RestartPolicy {
	case corev1.RestartPolicyNever:
		host.RestartPolicy = container.RestartPolicy{Name: container.RestartPolicyDisabled}
	case corev1.RestartPolicyOnFailure:
		host.RestartPolicy = container.RestartPolicy{Name: container.RestartPolicyOnFailure}
	case corev1.RestartPolicyAlways, "":
		host.RestartPolicy = container.RestartPolicy{Name: container.RestartPolicyAlways}
	}

	// Volumes: emptyDir only, a volume of the engine (removed with the
	// container, as the kubelet removes the Pod's directory) or a tmpfs
	// for medium Memory.
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		if v.EmptyDir == nil {
			return fail("volume %s is not an emptyDir: the translation mounts emptyDir only", v.Name)
		}
		vols[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			return fail("volume mount %s names no volume of the Pod", m.Name)
		}
		if m.SubPath != "" || m.SubPathExpr != "" || m.MountPropagation != nil || m.RecursiveReadOnly != nil {
			return fail("volume mount %s: subPath and propagation are not translated", m.Name)
		}
		mt := mount.Mount{Type: mount.TypeVolume, Target: m.MountPath, ReadOnly: m.ReadOnly}
		if v.EmptyDir.Medium == corev1.StorageMediumMemory {
			mt = mount.Mount{Type: mount.TypeTmpfs, Target: m.MountPath, ReadOnly: m.ReadOnly, TmpfsOptions: &mount.TmpfsOptions{Mode: 0o777}}
			if v.EmptyDir.SizeLimit != nil {
				mt.TmpfsOptions.SizeBytes = v.EmptyDir.SizeLimit.Value()
			}
		} else if v.EmptyDir.Medium != corev1.StorageMediumDefault {
			return fail("volume %s: emptyDir medium %s is not translated", v.Name, v.EmptyDir.Medium)
		}
		host.Mounts = append(host.Mounts, mt)
	}

	// Resources: the CPU limit is a CFS quota (--cpus), the CPU request
	// the shares, the memory limit the cgroup's limit with no swap (the
	// kubelet's default). A memory request sets nothing in the cgroup.
	for name := range c.Resources.Limits {
		if name != corev1.ResourceCPU && name != corev1.ResourceMemory && name != resourceGPU {
			return fail("limit of %s is not translated", name)
		}
	}
	if q, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		host.NanoCPUs = q.MilliValue() * 1e6
	}
	if q, ok := cpuRequest(c.Resources); ok {
		host.CPUShares = max(q.MilliValue()*1024/1000, 2)
	}
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		host.Memory = q.Value()
		host.MemorySwap = q.Value()
	}
	if q, ok := c.Resources.Limits[resourceGPU]; ok && q.Value() > 0 {
		host.DeviceRequests = []container.DeviceRequest{{Driver: "nvidia", Count: int(q.Value()), Capabilities: [][]string{{"gpu"}}}}
	}

	// Security context: the container's over the Pod's.
	if err := applySecurity(cfg, host, spec.SecurityContext, c.SecurityContext); err != nil {
		return fail("%v", err)
	}

	grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if spec.TerminationGracePeriodSeconds != nil {
		grace = *spec.TerminationGracePeriodSeconds
	}
	name := fmt.Sprintf("k8s_%s_%s_%s_%s_0", c.Name, pod.Name, pod.Namespace, pod.UID)
	return dockerPod{Name: name, Config: cfg, Host: host, StopTimeout: int(grace)}, nil
}

// resourceGPU is NVIDIA's device plugin's resource.
const resourceGPU = corev1.ResourceName("nvidia.com/gpu")

// cpuRequest is the container's CPU request, defaulting to its limit as
// the API server does.
func cpuRequest(r corev1.ResourceRequirements) (resource.Quantity, bool) {
	if q, ok := r.Requests[corev1.ResourceCPU]; ok {
		return q, true
	}
	q, ok := r.Limits[corev1.ResourceCPU]
	return q, ok
}

// applySecurity translates the Pod's and the container's security
// contexts, the container's winning field by field.
func applySecurity(cfg *container.Config, host *container.HostConfig, ps *corev1.PodSecurityContext, cs *corev1.SecurityContext) error {
	if ps == nil {
		ps = &corev1.PodSecurityContext{}
	}
	if cs == nil {
		cs = &corev1.SecurityContext{}
	}
	if left := setFields(*ps, "RunAsUser", "RunAsGroup", "RunAsNonRoot", "SupplementalGroups", "SeccompProfile", "Sysctls"); len(left) > 0 {
		return fmt.Errorf("securityContext.%s set: not translated", strings.Join(left, ", securityContext."))
	}
	if left := setFields(*cs, "RunAsUser", "RunAsGroup", "RunAsNonRoot", "ReadOnlyRootFilesystem", "Capabilities",
		"Privileged", "AllowPrivilegeEscalation", "SeccompProfile"); len(left) > 0 {
		return fmt.Errorf("container securityContext.%s set: not translated", strings.Join(left, ", securityContext."))
	}
	user, group := cmpPtr(cs.RunAsUser, ps.RunAsUser), cmpPtr(cs.RunAsGroup, ps.RunAsGroup)
	switch {
	case user != nil && group != nil:
		cfg.User = fmt.Sprintf("%d:%d", *user, *group)
	case user != nil:
		cfg.User = strconv.FormatInt(*user, 10)
	case group != nil:
		return fmt.Errorf("runAsGroup without runAsUser: not translated")
	}
	if nonRoot := cmpPtr(cs.RunAsNonRoot, ps.RunAsNonRoot); nonRoot != nil && *nonRoot && (user == nil || *user == 0) {
		// The kubelet checks the image's USER; ask for a numeric runAsUser.
		return fmt.Errorf("runAsNonRoot without a non-zero runAsUser: not translated")
	}
	for _, g := range ps.SupplementalGroups {
		host.GroupAdd = append(host.GroupAdd, strconv.FormatInt(g, 10))
	}
	for _, s := range ps.Sysctls {
		if host.Sysctls == nil {
			host.Sysctls = map[string]string{}
		}
		host.Sysctls[s.Name] = s.Value
	}
	if cs.ReadOnlyRootFilesystem != nil {
		host.ReadonlyRootfs = *cs.ReadOnlyRootFilesystem
	}
	if cs.Privileged != nil {
		host.Privileged = *cs.Privileged
	}
	if caps := cs.Capabilities; caps != nil {
		for _, c := range caps.Add {
			host.CapAdd = append(host.CapAdd, string(c))
		}
		for _, c := range caps.Drop {
			host.CapDrop = append(host.CapDrop, string(c))
		}
	}
	if ape := cs.AllowPrivilegeEscalation; ape != nil && !*ape {
		host.SecurityOpt = append(host.SecurityOpt, "no-new-privileges")
	}
	// Seccomp: the kubelet's default (without --seccomp-default) is
	// Unconfined; RuntimeDefault is the engine's default profile.
	seccomp := cs.SeccompProfile
	if seccomp == nil {
		seccomp = ps.SeccompProfile
	}
	switch {
	case seccomp == nil || seccomp.Type == corev1.SeccompProfileTypeUnconfined:
		host.SecurityOpt = append(host.SecurityOpt, "seccomp=unconfined")
	case seccomp.Type == corev1.SeccompProfileTypeRuntimeDefault:
	default:
		return fmt.Errorf("seccompProfile %s: not translated", seccomp.Type)
	}
	return nil
}

// expand replaces $(NAME) by vars[NAME] where NAME is there, and $$ by $,
// as the kubelet expands command, args and env values; an unknown
// reference stays as it is.
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// setFields names the exported fields of struct v that are set (not their
// zero value), except those named in handled.
func setFields(v any, handled ...string) []string {
	rv := reflect.ValueOf(v)
	var out []string
	for i := range rv.NumField() {
		f := rv.Type().Field(i)
		if f.IsExported() && !rv.Field(i).IsZero() && !slices.Contains(handled, f.Name) {
			out = append(out, f.Name)
		}
	}
	return out
}

func cmpPtr[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}

// TestPodToDocker: the translation of a Pod's container to the Docker
// engine's create request follows the spec field by field, and refuses by
// name what it cannot run.
func TestPodToDocker(t *testing.T) {
	no, yes := false, true
	uid, gid, grace := int64(1000), int64(2000), int64(45)
	base := func() *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "dstack-r1", Namespace: "dstack", UID: "u-1"},
			Spec: corev1.PodSpec{
				NodeName:                      "node-1",
				RestartPolicy:                 corev1.RestartPolicyNever,
				AutomountServiceAccountToken:  &no,
				EnableServiceLinks:            &no,
				TerminationGracePeriodSeconds: &grace,
				DNSPolicy:                     corev1.DNSClusterFirst,
				ServiceAccountName:            "default",
				SchedulerName:                 "default-scheduler",
				Tolerations:                   []corev1.Toleration{{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists}},
				SecurityContext:               &corev1.PodSecurityContext{RunAsGroup: &gid, SupplementalGroups: []int64{7}},
				Volumes: []corev1.Volume{
					{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
					{Name: "shm", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
						Medium: corev1.StorageMediumMemory, SizeLimit: ptrTo(resource.MustParse("64Mi"))}}},
				},
				Containers: []corev1.Container{{
					Name:       "runner",
					Image:      "runner:1",
					Command:    []string{"dstack-runner"},
					Args:       []string{"start", "--server", "$(SERVER)", "$$(SERVER)", "$(UNSET)"},
					WorkingDir: "/dstack",
					Env: []corev1.EnvVar{
						{Name: "SERVER", Value: "http://h:3000"},
						{Name: "URL", Value: "$(SERVER)/runner"},
						{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
							LocalObjectReference: corev1.LocalObjectReference{Name: "dstack-r1"}, Key: "join-token"}}},
						{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
					},
					Resources: corev1.ResourceRequirements{
						Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1900m"), corev1.ResourceMemory: resource.MustParse("1792Mi")},
						Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("1Gi")},
					},
					VolumeMounts: []corev1.VolumeMount{{Name: "work", MountPath: "/dstack"}, {Name: "shm", MountPath: "/dev/shm"}},
					SecurityContext: &corev1.SecurityContext{
						RunAsUser: &uid, ReadOnlyRootFilesystem: &yes, AllowPrivilegeEscalation: &no,
						Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					TerminationMessagePath:   corev1.TerminationMessagePathDefault,
					TerminationMessagePolicy: corev1.TerminationMessageReadFile,
					ImagePullPolicy:          corev1.PullIfNotPresent,
				}},
			},
		}
	}
	secrets := map[string]*corev1.Secret{"dstack-r1": {Data: map[string][]byte{"join-token": []byte("s3cret")}}}

	got, err := podToDocker(base(), secrets)
	if err != nil {
		t.Fatal(err)
	}
	want := dockerPod{
		Name: "k8s_runner_dstack-r1_dstack_u-1_0",
		Config: &container.Config{
			Image:      "runner:1",
			Entrypoint: []string{"dstack-runner"},
			Cmd:        []string{"start", "--server", "http://h:3000", "$(SERVER)", "$(UNSET)"},
			Env:        []string{"SERVER=http://h:3000", "URL=http://h:3000/runner", "TOKEN=s3cret", "NODE=node-1"},
			WorkingDir: "/dstack",
			Hostname:   "dstack-r1",
			User:       "1000:2000",
			Labels: map[string]string{labelPodName: "dstack-r1", labelPodNamespace: "dstack",
				labelPodUID: "u-1", labelContainer: "runner"},
		},
		Host: &container.HostConfig{
			RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
			Mounts: []mount.Mount{
				{Type: mount.TypeVolume, Target: "/dstack"},
				{Type: mount.TypeTmpfs, Target: "/dev/shm", TmpfsOptions: &mount.TmpfsOptions{Mode: 0o777, SizeBytes: 64 << 20}},
			},
			Resources: container.Resources{
				NanoCPUs: 1_900_000_000, CPUShares: 512, Memory: 1792 << 20, MemorySwap: 1792 << 20,
			},
			GroupAdd:       []string{"7"},
			ReadonlyRootfs: true,
			CapDrop:        []string{"ALL"},
			SecurityOpt:    []string{"no-new-privileges"},
		},
		StopTimeout: 45,
	}
	if !reflect.DeepEqual(got.Config, want.Config) || !reflect.DeepEqual(got.Host, want.Host) || got.Name != want.Name || got.StopTimeout != want.StopTimeout {
		t.Errorf("podToDocker =\n%+v\n%+v\nwant\n%+v\n%+v", got.Config, got.Host, want.Config, want.Host)
	}

	// No security context at all: the kubelet's defaults (seccomp
	// unconfined, the image's user), the limit as the CPU request.
	p := base()
	p.Spec.SecurityContext, p.Spec.Containers[0].SecurityContext = nil, nil
	delete(p.Spec.Containers[0].Resources.Requests, corev1.ResourceCPU)
	if got, err := podToDocker(p, secrets); err != nil || got.Config.User != "" || got.Host.CPUShares != 1945 ||
		!slices.Equal(got.Host.SecurityOpt, []string{"seccomp=unconfined"}) || got.Host.ReadonlyRootfs || got.Host.CapDrop != nil {
		t.Errorf("podToDocker without a security context = %+v, %v", got.Host, err)
	}

	refusals := []struct {
		name   string
		change func(*corev1.Pod)
		want   string
	}{
		{"an unbound Pod", func(p *corev1.Pod) { p.Spec.NodeName = "" }, "not bound"},
		{"a service account token", func(p *corev1.Pod) { p.Spec.AutomountServiceAccountToken = nil }, "automountServiceAccountToken"},
		{"an init container", func(p *corev1.Pod) { p.Spec.InitContainers = []corev1.Container{{Name: "i"}} }, "spec.InitContainers"},
		{"the host's network", func(p *corev1.Pod) { p.Spec.HostNetwork = true }, "spec.HostNetwork"},
		{"a probe", func(p *corev1.Pod) {
			p.Spec.Containers[0].LivenessProbe = &corev1.Probe{}
		}, "LivenessProbe"},
		{"envFrom", func(p *corev1.Pod) {
			p.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{}}
		}, "EnvFrom"},
		{"a missing Secret", func(p *corev1.Pod) {
			p.Spec.Containers[0].Env[2].ValueFrom.SecretKeyRef.Name = "other"
		}, `secret "other" not found`},
		{"a hostPath volume", func(p *corev1.Pod) {
			p.Spec.Volumes[0].VolumeSource = corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}
		}, "not an emptyDir"},
		{"fsGroup", func(p *corev1.Pod) { p.Spec.SecurityContext.FSGroup = &gid }, "securityContext.FSGroup"},
		{"an ephemeral-storage limit", func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Limits[corev1.ResourceEphemeralStorage] = resource.MustParse("1Gi")
		}, "ephemeral-storage"},
		{"a pull from a registry", func(p *corev1.Pod) { p.Spec.Containers[0].ImagePullPolicy = corev1.PullAlways }, "imagePullPolicy Always"},
	}
	for _, r := range refusals {
		p := base()
		r.change(p)
		if _, err := podToDocker(p, secrets); err == nil || !strings.Contains(err.Error(), r.want) {
			t.Errorf("podToDocker with %s = %v, want an error saying %q", r.name, err, r.want)
		}
	}
}

func ptrTo[T any](v T) *T { return &v }
