// Command k8s is a multi-call binary (in the spirit of the old "hyperkube")
// bundling the Kubernetes components of the offline kind node image
// (e2e/kind/node-image.sh), so that the shared packages are compiled once and
// linked once.
//
// Usage:
//
//	k8s <component> [flags...]
//	<component> [flags...]          (when invoked through a symlink)
//
// Components: kube-apiserver, kube-controller-manager, kube-scheduler,
// kubelet, kube-proxy, kubectl, etcd, kubeadm (kind.go) and coredns (a
// stand-in: dns.go's cluster DNS with CoreDNS's probe ports, kind.go).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	_ "time/tzdata" // CronJob time zone support (apiserver, controller-manager)

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/client-go/plugin/pkg/client/auth" // kubectl auth plugins
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

var cobraComponents = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler": func() *cobra.Command {
		return scheduler.NewSchedulerCommand()
	},
	"kubelet":    kubelet.NewKubeletCommand,
	"kube-proxy": proxy.NewProxyCommand,
	"kubeadm":    newKubeadmCommand,
}

func usage() {
	names := []string{"kubectl", "etcd", "coredns"}
	for n := range cobraComponents {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: %s <component> [args...]\ncomponents:\n", filepath.Base(os.Args[0]))
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %s\n", n)
	}
	os.Exit(2)
}

func main() {
	name := filepath.Base(os.Args[0])
	if !known(name) {
		if len(os.Args) < 2 || !known(os.Args[1]) {
			usage()
		}
		// "k8s kubelet --flag" -> behave as if invoked as "kubelet --flag".
		name = os.Args[1]
		os.Args = os.Args[1:]
	}

	switch name {
	case "coredns":
		os.Exit(corednsMain(os.Args[1:]))
	case "etcd":
		etcdmain.Main(os.Args)
		os.Exit(0)
	case "kubectl":
		command := kubectlcmd.NewDefaultKubectlCommand()
		if err := cli.RunNoErrOutput(command); err != nil {
			kubectlutil.CheckErr(err)
		}
		os.Exit(0)
	default:
		os.Exit(cli.Run(cobraComponents[name]()))
	}
}

func known(name string) bool {
	switch name {
	case "etcd", "kubectl", "coredns":
		return true
	}
	_, ok := cobraComponents[name]
	return ok
}
