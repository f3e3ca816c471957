// Command clientgo-peer is client-go's side of kaito's runtime benchmarks (bench/runtime.py,
// bench/informer_scale.py): the same work as the kaito.runtime side, written the way a client-go
// controller is written (a dynamic shared informer, a lister, a rate-limited workqueue, workers),
// so the two can be compared on one apiserver.
//
// Why dynamic (unstructured) and not generated types: the benchmark's BenchObject CRD has no Go
// types, and kaito.runtime also keeps plain decoded JSON, so both sides decode the same JSON
// into generic maps. Every figure goes to stdout as one JSON object per line; the last one has
// "kind": "result" (bench/_clientgo.py reads it). Errors go to stderr with a non-zero exit.
//
//	clientgo-peer reconcile -kubeconfig K -namespace NS -n N -mode record|patch [-workers 32]
//	clientgo-peer sync -kubeconfig K -namespace NS -expect N [-warmup-namespace NS2] [-kind benchobjects|configmaps]
//
// sync -kind configmaps is client-go at its most efficient: the generated typed clientset (which
// asks for protobuf) and its ConfigMap informer, decoding into Go structs instead of maps.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"
)

// The benchmark's CRD (bench/runtime.py's CRD).
var benchGVR = schema.GroupVersionResource{Group: "bench.kaito.sh", Version: "v1", Resource: "benchobjects"}

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: clientgo-peer reconcile|sync [flags]"))
	}
	var err error
	switch os.Args[1] {
	case "reconcile":
		err = runReconcile(os.Args[2:])
	case "sync":
		err = runSync(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (want reconcile or sync)", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "clientgo-peer:", err)
	os.Exit(1)
}

// emit writes one JSON object on its own stdout line.
func emit(fields map[string]any) {
	line, err := json.Marshal(fields)
	if err != nil {
		fail(err)
	}
	fmt.Println(string(line))
}

// unixSeconds is the wall clock as the Python side's time.time() reads it.
func unixSeconds(t time.Time) float64 {
	return float64(t.UnixNano()) / 1e9
}

// restConfig loads the kubeconfig. Client-side rate limiting is switched off (QPS < 0): kaito's
// client has none, and client-go's default (5 requests/s, burst 10) would make the status-write
// rounds measure that limiter instead of the framework.
func restConfig(kubeconfig string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS = -1
	cfg.UserAgent = "clientgo-peer"
	return cfg, nil
}

// ---------------------------------------------------------------- reconcile

// counter records the first completed reconcile of each object, as the Python sides do.
type counter struct {
	mu     sync.Mutex
	seen   map[string]struct{}
	want   int
	tLast  time.Time
	done   chan struct{}
	closed bool
}

func (c *counter) record(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[key]; ok {
		return
	}
	c.seen[key] = struct{}{}
	if len(c.seen) == c.want && !c.closed {
		c.tLast = time.Now()
		c.closed = true
		close(c.done)
	}
}

func runReconcile(args []string) error {
	fs := flag.NewFlagSet("reconcile", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig path")
	namespace := fs.String("namespace", "", "namespace of the BenchObjects")
	n := fs.Int("n", 0, "objects to wait for")
	mode := fs.String("mode", "record", "record: note the reconcile; patch: one status PATCH per object")
	workers := fs.Int("workers", 32, "concurrent reconciles (kaito's side runs 32)")
	timeout := fs.Duration("timeout", 15*time.Minute, "give up after this long")
	_ = fs.Parse(args)
	if *n <= 0 || *namespace == "" || (*mode != "record" && *mode != "patch") {
		return fmt.Errorf("reconcile needs -namespace, -n > 0 and -mode record|patch")
	}
	cfg, err := restConfig(*kubeconfig)
	if err != nil {
		return err
	}
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	// The clock starts here, credentials loaded: the same point as kaito's Manager.start() and
	// kopf's login handler returning.
	t0 := time.Now()
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(client, 0, *namespace, nil)
	generic := factory.ForResource(benchGVR)
	informer := generic.Informer()
	if err := informer.SetTransform(stripManagedFields); err != nil {
		return err
	}
	lister := generic.Lister()
	queue := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "bench"},
	)
	defer queue.ShutDown()
	enqueue := func(obj any) {
		key, err := cache.MetaNamespaceKeyFunc(obj)
		if err == nil {
			queue.Add(key)
		}
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: func(obj any) {
			key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
			if err == nil {
				queue.Add(key)
			}
		},
	}); err != nil {
		return err
	}
	count := &counter{seen: make(map[string]struct{}, *n), want: *n, done: make(chan struct{})}
	var reconciles, failures int64
	var statsMu sync.Mutex

	reconcile := func(key string) error {
		ns, name, err := cache.SplitMetaNamespaceKey(key)
		if err != nil {
			return nil // a key we cannot parse is never retried
		}
		obj, err := lister.ByNamespace(ns).Get(name)
		if err != nil {
			return nil // deleted: nothing to do (kaito's side returns on NotFound too)
		}
		if *mode == "patch" {
			u, ok := obj.(*unstructured.Unstructured)
			if !ok {
				return fmt.Errorf("unexpected type %T", obj)
			}
			done, _, _ := unstructured.NestedBool(u.Object, "status", "done")
			if done {
				return nil // converged (the echo of our own write): no request
			}
			_, err := client.Resource(benchGVR).Namespace(ns).Patch(
				ctx, name, types.MergePatchType, []byte(`{"status":{"done":true}}`), metav1.PatchOptions{},
			)
			if err != nil {
				return err
			}
		}
		count.record(key)
		return nil
	}
	worker := func() {
		for {
			key, quit := queue.Get()
			if quit {
				return
			}
			err := reconcile(key)
			statsMu.Lock()
			reconciles++
			if err != nil {
				failures++
			}
			statsMu.Unlock()
			if err != nil {
				queue.AddRateLimited(key)
			} else {
				queue.Forget(key)
			}
			queue.Done(key)
		}
	}

	factory.Start(ctx.Done())
	// Workers start once the cache has synced, as client-go controllers do; events queued while
	// the initial list was delivered are processed then.
	if !cache.WaitFor(ctx, "", informer.HasSyncedChecker()) {
		return fmt.Errorf("informer did not sync: %v", context.Cause(ctx))
	}
	tSynced := time.Now()
	for range *workers {
		go worker()
	}
	select {
	case <-count.done:
	case <-ctx.Done():
		return fmt.Errorf("only %d of %d objects reconciled: %v", len(count.seen), *n, context.Cause(ctx))
	}
	statsMu.Lock()
	defer statsMu.Unlock()
	emit(map[string]any{
		"kind":           "result",
		"command":        "reconcile",
		"mode":           *mode,
		"n":              *n,
		"t0":             unixSeconds(t0),
		"t_synced":       unixSeconds(tSynced),
		"t_last":         unixSeconds(count.tLast),
		"seconds":        count.tLast.Sub(t0).Seconds(),
		"reconciles":     reconciles,
		"failures":       failures,
		"workers":        *workers,
		"go_version":     runtime.Version(),
		"gomaxprocs":     runtime.GOMAXPROCS(0),
		"watch_list_env": os.Getenv("KUBE_FEATURE_WatchListClient"),
	})
	return nil
}

// ---------------------------------------------------------------- sync

// procStatusKiB reads one "VmXxx:   123 kB" field of /proc/self/status, in KiB.
func procStatusKiB(field string) (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	scan := bufio.NewScanner(f)
	for scan.Scan() {
		line := scan.Text()
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			parts := strings.Fields(rest)
			if len(parts) == 0 {
				break
			}
			return strconv.ParseInt(parts[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s not in /proc/self/status", field)
}

func mustKiB(field string) int64 {
	v, err := procStatusKiB(field)
	if err != nil {
		fail(err)
	}
	return v
}

// startInformer runs one informer on namespace (kind benchobjects: dynamic; configmaps: typed)
// and waits until it has synced.
func startInformer(ctx context.Context, cfg *rest.Config, kind, namespace string, strip bool) (cache.SharedIndexInformer, error) {
	var informer cache.SharedIndexInformer
	var start func(<-chan struct{})
	switch kind {
	case "benchobjects":
		client, err := dynamic.NewForConfig(cfg)
		if err != nil {
			return nil, err
		}
		factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(client, 0, namespace, nil)
		informer, start = factory.ForResource(benchGVR).Informer(), factory.Start
	case "configmaps":
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return nil, err
		}
		factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace))
		informer, start = factory.Core().V1().ConfigMaps().Informer(), factory.Start
	default:
		return nil, fmt.Errorf("unknown -kind %q (want benchobjects or configmaps)", kind)
	}
	if strip {
		if err := informer.SetTransform(stripManagedFields); err != nil {
			return nil, err
		}
	}
	start(ctx.Done())
	if !cache.WaitFor(ctx, "", informer.HasSyncedChecker()) {
		return nil, fmt.Errorf("informer on %s did not sync: %v", namespace, context.Cause(ctx))
	}
	return informer, nil
}

func runSync(args []string) error {
	fs := flag.NewFlagSet("sync", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig path")
	namespace := fs.String("namespace", "", "namespace holding the objects")
	warmup := fs.String("warmup-namespace", "", "an empty namespace to sync first (connection, TLS, code paths)")
	expect := fs.Int("expect", 0, "objects the synced cache must hold")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up after this long")
	kind := fs.String("kind", "benchobjects", "benchobjects (dynamic, JSON) or configmaps (typed, protobuf)")
	strip := fs.Bool("strip-managed-fields", true, "drop metadata.managedFields on the way into the cache, as kaito.runtime does by default")
	_ = fs.Parse(args)
	if *namespace == "" || *expect <= 0 {
		return fmt.Errorf("sync needs -namespace and -expect > 0")
	}
	cfg, err := restConfig(*kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if *warmup != "" {
		if _, err := startInformer(ctx, cfg, *kind, *warmup, *strip); err != nil {
			return err
		}
	}
	runtime.GC()
	before := mustKiB("VmRSS")
	t0 := time.Now()
	informer, err := startInformer(ctx, cfg, *kind, *namespace, *strip)
	if err != nil {
		return err
	}
	seconds := time.Since(t0).Seconds()
	items := len(informer.GetStore().ListKeys())
	if items != *expect {
		return fmt.Errorf("synced cache holds %d objects, expected %d", items, *expect)
	}
	hwm := mustKiB("VmHWM")
	// The steady figure: after a collection, as the Python side measures after gc.collect().
	// Go keeps freed pages until its scavenger returns them, which is part of its real cost.
	runtime.GC()
	after := mustKiB("VmRSS")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	emit(map[string]any{
		"kind":                 "result",
		"command":              "sync",
		"resource":             *kind,
		"objects":              items,
		"sync_seconds":         seconds,
		"rss_before_kib":       before,
		"rss_after_kib":        after,
		"hwm_kib":              hwm,
		"heap_alloc_kib":       ms.HeapAlloc / 1024,
		"go_version":           runtime.Version(),
		"gomaxprocs":           runtime.GOMAXPROCS(0),
		"watch_list_env":       os.Getenv("KUBE_FEATURE_WatchListClient"),
		"strip_managed_fields": *strip,
	})
	return nil
}

// stripManagedFields is the informer transform controller-runtime installs by default and
// kaito.runtime's store applies (InformerOptions.strip_managed_fields): managedFields are often
// half of a small object and no reconciler reads them, so the cache should not hold them.
func stripManagedFields(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}
