// Command kube is one binary for every Kubernetes node and control-plane
// component the cluster suite runs, built from the upstream packages at the
// version pinned in go.mod. One binary links once instead of six times,
// which is most of the build time on a two-core machine.
//
// Usage: kube <etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy> [flags]
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kube <etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy> [flags]")
		os.Exit(2)
	}
	component, args := os.Args[1], os.Args[2:]
	if component == "etcd" {
		etcdmain.Main(append([]string{"etcd"}, args...))
		return
	}
	var command *cobra.Command
	switch component {
	case "kube-apiserver":
		command = apiserver.NewAPIServerCommand()
	case "kube-controller-manager":
		command = controllermanager.NewControllerManagerCommand()
	case "kube-scheduler":
		command = scheduler.NewSchedulerCommand()
	case "kubelet":
		command = kubelet.NewKubeletCommand(context.Background())
	case "kube-proxy":
		command = proxy.NewProxyCommand()
	default:
		fmt.Fprintf(os.Stderr, "kube: unknown component %q\n", component)
		os.Exit(2)
	}
	command.SetArgs(args)
	os.Exit(cli.Run(command))
}
