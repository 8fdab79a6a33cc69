// Command llmcanary-k8s is a multi-call binary (like busybox or the old
// hyperkube): one link of the Kubernetes tree instead of six saves most of the
// build time and disk. It dispatches on the name it is called by (the build
// script makes symlinks etcd, kube-apiserver, ...) or, failing that, on its
// first argument: `llmcanary-k8s kubectl get pods`.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	_ "time/tzdata" // CronJob time zones, as the upstream mains do

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

// commands maps a program name to its upstream entry point; each returns the
// process exit code.
var commands = map[string]func() int{
	"etcd":                    func() int { etcdmain.Main(os.Args); return 0 },
	"kube-apiserver":          func() int { return runCobra(apiserver.NewAPIServerCommand()) },
	"kube-controller-manager": func() int { return runCobra(controllermanager.NewControllerManagerCommand()) },
	"kube-scheduler":          func() int { return runCobra(scheduler.NewSchedulerCommand()) },
	"kubectl":                 runKubectl, // kubectl.go
	"kwok":                    runKwok,    // kwok.go
}

func runCobra(c *cobra.Command) int { return cli.Run(c) }

func main() {
	name := filepath.Base(os.Args[0])
	if _, ok := commands[name]; !ok && len(os.Args) > 1 {
		// Called by its own name: shift so the component sees the argv it
		// expects (cobra and etcd read os.Args themselves).
		name = os.Args[1]
		os.Args = os.Args[1:]
	}
	run, ok := commands[name]
	if !ok {
		names := make([]string, 0, len(commands))
		for n := range commands {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "usage: %s COMMAND [ARGS...]\ncommands: %v\n", filepath.Base(os.Args[0]), names)
		os.Exit(2)
	}
	os.Exit(run())
}
