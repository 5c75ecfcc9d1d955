// Command kubelab is the twin's Kubernetes control plane: one multi-call binary (like hyperkube and k3s)
// that runs the upstream commands of Kubernetes 1.32 and etcd, chosen by the name it is started as
// (a symlink) or by its first argument:
//
//	kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (k8s.io/kubernetes v1.32)
//	etcd                                                              (go.etcd.io/etcd/server/v3 v3.5, etcdmain)
//
// Nothing here changes upstream behaviour: each entry calls the same constructor as upstream's own main
// package (cmd/<name>/<name>.go), so flags, defaults and output are those of the real components.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"

	// Same blank imports as upstream's main packages: client metrics and version metrics.
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
)

var commands = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "etcd"}

func main() {
	name := filepath.Base(os.Args[0])
	if !contains(name) && len(os.Args) > 1 && contains(os.Args[1]) {
		name = os.Args[1]
		os.Args = append([]string{name}, os.Args[2:]...)
	}
	switch name {
	case "kube-apiserver":
		os.Exit(cli.Run(apiserver.NewAPIServerCommand()))
	case "kube-controller-manager":
		os.Exit(cli.Run(controllermanager.NewControllerManagerCommand()))
	case "kube-scheduler":
		os.Exit(cli.Run(scheduler.NewSchedulerCommand()))
	case "kubectl":
		command := cmd.NewDefaultKubectlCommand()
		if err := cli.RunNoErrOutput(command); err != nil {
			util.CheckErr(err)
		}
	case "etcd":
		etcdmain.Main(os.Args)
	default:
		fmt.Fprintf(os.Stderr, "usage: kubelab {%s} [flags]  (or call it through a symlink of that name)\n",
			strings.Join(commands, "|"))
		os.Exit(2)
	}
}

func contains(name string) bool {
	for _, c := range commands {
		if c == name {
			return true
		}
	}
	return false
}
