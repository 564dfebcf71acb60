package kubernetes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	"github.com/dstackai/dstack/backend"
)

// Labels and annotations of a runner Pod. The labels carry the server's
// tags in a form labels allow (labelValue), for List's selector; the
// annotations carry them as they are.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "dstack"
	keyServerID    = "dstack.ai/server-id"
	keyLimitID     = "dstack.ai/limit-id"
	keyRecordID    = "dstack.ai/record-id"
	keyLaunchKey   = "dstack.ai/launch-key"
	keyType        = "dstack.ai/instance-type"
	keySpot        = "dstack.ai/spot"
	keyRegion      = "dstack.ai/region"
	keyImage       = "dstack.ai/image"
	// SecretKey is the join token's key in the runner Pod's Secret.
	SecretKey = "join-token"
)

// Paths in the runner Pod: an emptyDir holds the runner's own files, the
// jobs' working directories and, when it is downloaded, its binary.
const (
	podVolume = "dstack"
	podMount  = "/dstack"
	// RunnerPath is where the binary is in the runner Pod when it is
	// downloaded, or injected into a job's image by the init container.
	RunnerPath = podMount + "/bin/dstack-runner"
	// InitContainer names the init container that injects the runner into
	// a Pod of a job's image.
	InitContainer = "dstack-runner"
)

// PodName is the name of the runner Pod (and of its Secret) of an instance
// record: "dstack-" and the record ID where it is a DNS label, else its
// DNS-safe form with a hash of the ID, so that a repeated launch of a record
// finds its Pod.
func PodName(recordID string) string {
	safe := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '-'
	}, recordID)
	name := "dstack-" + safe
	if safe != recordID || len(name) > 50 {
		sum := sha256.Sum256([]byte(recordID))
		name = strings.TrimRight("dstack-"+safe[:min(len(safe), 32)], "-") + "-" + hex.EncodeToString(sum[:6])
	}
	return name
}

// labelValue is s where it is a valid label value, else "h-" and 40 hex
// digits of its SHA-256: label values are at most 63 characters of
// [A-Za-z0-9._-].
func labelValue(s string) string {
	if len(validation.IsValidLabelValue(s)) == 0 {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return "h-" + hex.EncodeToString(sum[:20])
}

// Launch creates one runner Pod per instance of req, each with a Secret
// holding its join token and owned by the Pod (so it goes with it). A Pod
// that exists already (a repeated launch) is returned as it is. The Pods
// are created one by one: when the namespace's ResourceQuota stops one,
// those created are returned without an error, and when it stops the first,
// the error is ErrQuota.
func (b *Backend) Launch(ctx context.Context, req backend.LaunchRequest) ([]backend.Instance, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	if req.Offer.Region != b.region {
		return nil, backend.Errorf(backend.ErrInvalid, "launch", "UnknownRegion",
			"the kubernetes backend's region is its context %q, not %q", b.region, req.Offer.Region)
	}
	k := typeKey{Type: req.Offer.InstanceType, Spot: req.Offer.Spot}
	t, err := b.nodeType(ctx, k)
	if err != nil {
		return nil, err
	}
	var out []backend.Instance
	for _, spec := range req.Instances {
		in, err := b.launchOne(ctx, req, spec, t)
		if err != nil {
			if len(out) > 0 && !errors.Is(err, context.Canceled) {
				b.cfg.Logger.Warn("launched part of a request", "launched", len(out), "asked", len(req.Instances), "err", err)
				return out, nil
			}
			return nil, err
		}
		out = append(out, in)
	}
	return out, nil
}

// nodeType is the sizes of k's nodes, scanning the nodes again when the
// last scan lacks it; a type the cluster does not have is ErrUnsupported
// naming those it has.
func (b *Backend) nodeType(ctx context.Context, k typeKey) (*nodeType, error) {
	types, err := b.nodeTypes(ctx, false)
	if err != nil {
		return nil, err
	}
	if t, ok := types[k]; ok {
		return t, nil
	}
	if types, err = b.nodeTypes(ctx, true); err != nil {
		return nil, err
	}
	if t, ok := types[k]; ok {
		return t, nil
	}
	purchase := "on-demand"
	if k.Spot {
		purchase = "spot"
	}
	return nil, backend.Errorf(backend.ErrUnsupported, "launch", "UnknownInstanceType",
		"the cluster has no %s nodes of instance type %q (label %s); it has %s", purchase, k.Type, LabelInstanceType, typeNames(types))
}

// typeNames lists the types of a scan, "spot" marked, for an error.
func typeNames(types map[typeKey]*nodeType) string {
	var names []string
	for k := range types {
		n := k.Type
		if k.Spot {
			n += " (spot)"
		}
		names = append(names, n)
	}
	if len(names) == 0 {
		return "no node with that label"
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// launchOne creates an instance's Pod, then its Secret owned by the Pod.
// A Pod of the record that exists already is taken as it is (its Secret
// created if a crash left it without one); one of another launch or
// server is refused.
func (b *Backend) launchOne(ctx context.Context, req backend.LaunchRequest, spec backend.InstanceSpec, t *nodeType) (backend.Instance, error) {
	pods := b.client.CoreV1().Pods(b.cfg.Namespace)
	want := b.pod(req, spec, t)
	pod, err := pods.Create(ctx, want, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		pod, err = pods.Get(ctx, want.Name, metav1.GetOptions{})
		if err == nil && (pod.Annotations[keyLaunchKey] != req.IdempotencyKey || pod.Annotations[keyServerID] != req.ServerID) {
			return backend.Instance{}, backend.Errorf(backend.ErrInvalid, "launch", "PodExists",
				"Pod %s/%s exists already for another launch (%q)", b.cfg.Namespace, want.Name, pod.Annotations[keyLaunchKey])
		}
	}
	if err != nil {
		return backend.Instance{}, classify("launch", err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name, Namespace: b.cfg.Namespace, Labels: pod.Labels,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(false),
			}},
		},
		Type:       corev1.SecretTypeOpaque,
		StringData: map[string]string{SecretKey: spec.JoinToken},
	}
	if _, err := b.client.CoreV1().Secrets(b.cfg.Namespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		// A Pod without its token can never join: take it back.
		if derr := b.deletePod(context.WithoutCancel(ctx), pod.Name); derr != nil {
			b.cfg.Logger.Warn("a runner Pod whose Secret could not be made is left for the reconciler", "pod", pod.Name, "err", derr)
		}
		return backend.Instance{}, classify("launch", err)
	}
	return b.instance(pod), nil
}

// pod is the runner Pod of one instance (see docs/kubernetes.md).
func (b *Backend) pod(req backend.LaunchRequest, spec backend.InstanceSpec, t *nodeType) *corev1.Pod {
	name := PodName(spec.RecordID)
	spot := "false"
	if req.Offer.Spot {
		spot = "true"
	}
	labels := map[string]string{
		LabelManagedBy: ManagedBy,
		keyServerID:    labelValue(req.ServerID),
		keyLimitID:     labelValue(req.LimitID),
		keyRecordID:    labelValue(spec.RecordID),
		keyLaunchKey:   labelValue(req.IdempotencyKey),
		keyType:        labelValue(req.Offer.InstanceType),
		keySpot:        spot,
	}
	annotations := map[string]string{
		keyServerID:  req.ServerID,
		keyLimitID:   req.LimitID,
		keyRecordID:  spec.RecordID,
		keyLaunchKey: req.IdempotencyKey,
		keyType:      req.Offer.InstanceType,
		keySpot:      spot,
		keyRegion:    b.region,
	}
	cpu, mem := b.podSize(t)
	res := corev1.ResourceList{
		corev1.ResourceCPU:    milliQuantity(cpu),
		corev1.ResourceMemory: *resource.NewQuantity(mem, resource.BinarySI),
	}
	// The init container asks for the CPU and memory of the main one (a
	// Pod's request is the larger of the two, so this adds nothing and
	// keeps it Guaranteed), not for its GPUs, which it does not use.
	initRes := corev1.ResourceList{corev1.ResourceCPU: res[corev1.ResourceCPU], corev1.ResourceMemory: res[corev1.ResourceMemory]}
	if t.gpus > 0 {
		res[ResourceGPU] = *resource.NewQuantity(t.gpus, resource.DecimalSI)
	}
	image, command := b.cfg.Image, []string{"/bin/sh", "-c", bootstrap}
	runnerArgs := []string{"start", "--executor", "shell", "--server", req.ServerURL, "--name", name,
		"--data-dir", podMount + "/data", "--work-dir", podMount + "/work"}
	mounts := []corev1.VolumeMount{{Name: podVolume, MountPath: podMount}}
	var inits []corev1.Container
	switch {
	case req.Image != "":
		// The job's image, with the runner injected into the emptyDir by
		// the init container: from the runner image, or downloaded from
		// the server by the default image.
		annotations[keyImage] = req.Image
		image, command = req.Image, append([]string{RunnerPath}, runnerArgs...)
		init := corev1.Container{
			Name: InitContainer, Image: b.cfg.RunnerImage, Command: []string{"dstack-runner", "copy", RunnerPath},
			Resources: corev1.ResourceRequirements{Requests: initRes, Limits: initRes}, VolumeMounts: mounts,
		}
		if b.cfg.RunnerImage == "" {
			init.Image, init.Command = b.cfg.Image, []string{"/bin/sh", "-c", fetchRunner}
			init.Env = []corev1.EnvVar{{Name: "DSTACK_SERVER", Value: req.ServerURL}}
		}
		inits = []corev1.Container{init}
	case b.cfg.RunnerImage != "":
		image, command = b.cfg.RunnerImage, append([]string{"dstack-runner"}, runnerArgs...)
	}
	tolerations := append([]corev1.Toleration{
		{Key: string(ResourceGPU), Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	}, b.cfg.Tolerations...)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: b.cfg.Namespace, Labels: labels, Annotations: annotations},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](30),
			Affinity:                      &corev1.Affinity{NodeAffinity: nodeAffinity(req.Offer.InstanceType, req.Offer.Spot)},
			Tolerations:                   tolerations,
			Volumes:                       []corev1.Volume{{Name: podVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			InitContainers:                inits,
			Containers: []corev1.Container{{
				Name:    "runner",
				Image:   image,
				Command: command,
				Env: []corev1.EnvVar{
					{Name: "DSTACK_SERVER", Value: req.ServerURL},
					{Name: "DSTACK_RUNNER_ARGS", Value: strings.Join(runnerArgs, " ")},
					{Name: "DSTACK_JOIN_TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: SecretKey,
					}}},
					{Name: "DSTACK_NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
				},
				Resources:    corev1.ResourceRequirements{Requests: res, Limits: res},
				VolumeMounts: mounts,
			}},
		},
	}
}

// nodeAffinity pins a Pod to nodes of one instance type at one purchase
// type: spot as any of the capacity-type labels says, on-demand as none
// does.
func nodeAffinity(instanceType string, spot bool) *corev1.NodeAffinity {
	typeReq := corev1.NodeSelectorRequirement{Key: LabelInstanceType, Operator: corev1.NodeSelectorOpIn, Values: []string{instanceType}}
	var terms []corev1.NodeSelectorTerm
	if spot {
		for _, l := range spotLabels {
			terms = append(terms, corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{
				typeReq, {Key: l.Key, Operator: corev1.NodeSelectorOpIn, Values: []string{l.Value}},
			}})
		}
	} else {
		exprs := []corev1.NodeSelectorRequirement{typeReq}
		for _, l := range spotLabels {
			exprs = append(exprs, corev1.NodeSelectorRequirement{Key: l.Key, Operator: corev1.NodeSelectorOpNotIn, Values: []string{l.Value}})
		}
		terms = []corev1.NodeSelectorTerm{{MatchExpressions: exprs}}
	}
	return &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: terms}}
}

// bootstrap is the runner Pod's command when no RunnerImage is given and
// its jobs have no image: it downloads dstack-runner (fetchRunner) and
// starts it. The join token stays in the environment, never in the
// arguments.
const bootstrap = fetchRunner + `# DSTACK_RUNNER_ARGS holds no spaces within an argument.
exec "$bin" $DSTACK_RUNNER_ARGS
`

// fetchRunner downloads dstack-runner from the server (curl, wget, or
// python3, whichever the image has) to RunnerPath and checks its SHA-256
// where sha256sum is. It is the init container's command in a Pod of a
// job's image when no RunnerImage is given.
const fetchRunner = `set -eu
case "$(uname -m)" in
x86_64 | amd64) arch=amd64 ;;
aarch64 | arm64) arch=arm64 ;;
*) echo "dstack: dstack-runner is built for amd64 and arm64, not $(uname -m)" >&2; exit 1 ;;
esac
url="${DSTACK_SERVER%/}/runner/download/linux/$arch/dstack-runner"
bin=` + RunnerPath + `
mkdir -p "$(dirname "$bin")"
fetch() {
	if command -v curl >/dev/null 2>&1; then curl -fsSL --max-time 300 -o "$2" "$1"
	elif command -v wget >/dev/null 2>&1; then wget -q -O "$2" "$1"
	elif command -v python3 >/dev/null 2>&1; then python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$1" "$2"
	else echo "dstack: the image has neither curl, wget nor python3 to download dstack-runner: set a runner image" >&2; exit 1
	fi
}
i=0
until fetch "$url" "$bin" && fetch "$url.sha256" "$bin.sha256"; do
	i=$((i + 1))
	if [ "$i" -ge 60 ]; then echo "dstack: cannot download $url" >&2; exit 1; fi
	sleep 5
done
if command -v sha256sum >/dev/null 2>&1; then
	want=$(cut -d' ' -f1 "$bin.sha256")
	got=$(sha256sum "$bin" | cut -d' ' -f1)
	[ "$want" = "$got" ] || { echo "dstack: dstack-runner's checksum does not match" >&2; exit 1; }
fi
chmod 0755 "$bin"
`

// String names a Pod for errors.
func podRef(ns, name string) string { return fmt.Sprintf("%s/%s", ns, name) }
