package kubernetes

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/dstackai/dstack/backend"
)

// watch is an informer on one server's runner Pods. client-go's reflector
// lists, then watches from the list's resource version; a watch that drops
// is opened again from the last version seen, and one the API server has
// compacted past (410 Gone) makes it list again.
type watch struct {
	stop chan struct{}
	done chan struct{} // closed once the informer's Run has returned
}

// watch starts, once per server ID, the informer that calls OnGone when one
// of the server's runner Pods leaves (deleted, evicted, ended, or no node
// will take it), so that the server reconciles at once instead of on its
// next periodic pass: a job on an evicted Pod is requeued within seconds.
func (b *Backend) watch(serverID string) {
	if b.cfg.OnGone == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.watching[serverID] != nil || b.closed {
		return
	}
	w := &watch{stop: make(chan struct{}), done: make(chan struct{})}
	b.watching[serverID] = w
	lw := cache.NewFilteredListWatchFromClient(b.client.CoreV1().RESTClient(), "pods", b.cfg.Namespace,
		func(o *metav1.ListOptions) { o.LabelSelector = selector(serverID) })
	inf := cache.NewSharedIndexInformer(lw, &corev1.Pod{}, 0, cache.Indexers{})
	gone := func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			b.cfg.OnGone() // a tombstone: the Pod was deleted while the watch was down
			return
		}
		if p.Annotations[keyServerID] != serverID {
			return
		}
		if st, _ := b.state(p); st == backend.StateGone {
			b.cfg.Logger.Info("a runner Pod is leaving", "pod", p.Name, "phase", p.Status.Phase, "node", p.Spec.NodeName,
				"deleting", p.DeletionTimestamp != nil)
			b.cfg.OnGone()
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) { gone(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				b.cfg.Logger.Info("a runner Pod is gone", "pod", p.Name, "node", p.Spec.NodeName)
			}
			b.cfg.OnGone()
		},
	})
	go func() {
		defer close(w.done)
		inf.Run(w.stop)
	}()
}

// Close stops the backend's watches and waits for them to end. The
// backend's other methods still work; List starts no watch again.
func (b *Backend) Close() {
	b.mu.Lock()
	b.closed = true
	var ws []*watch
	for id, w := range b.watching {
		close(w.stop)
		ws = append(ws, w)
		delete(b.watching, id)
	}
	b.mu.Unlock()
	for _, w := range ws {
		<-w.done
	}
}
