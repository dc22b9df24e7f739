package main

// A minimal CRI client used by down.sh: "k8s cri-cleanup --endpoint unix:///..."
// stops and removes every pod sandbox (and so its containers, CNI
// attachment and network namespace) known to the container runtime.
// "k8s cri-pods --endpoint ..." lists sandboxes (debugging aid).

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	remote "k8s.io/cri-client/pkg"
)

func criMain(name string, args []string) int {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	endpoint := fs.String("endpoint", "unix:///run/containerd/containerd.sock", "CRI endpoint")
	timeout := fs.Duration("timeout", 60*time.Second, "overall timeout")
	_ = fs.Parse(args)

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	rs, err := remote.NewRemoteRuntimeService(*endpoint, 10*time.Second, nil, nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: connect %s: %v\n", name, *endpoint, err)
		return 1
	}
	pods, err := rs.ListPodSandbox(ctx, nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: list sandboxes: %v\n", name, err)
		return 1
	}
	rc := 0
	for _, p := range pods {
		md := p.GetMetadata()
		fmt.Printf("%s\t%s/%s\t%s\n", p.GetId()[:13], md.GetNamespace(), md.GetName(), p.GetState())
		if name != "cri-cleanup" {
			continue
		}
		if err := rs.StopPodSandbox(ctx, p.GetId()); err != nil {
			fmt.Fprintf(os.Stderr, "stop %s: %v\n", p.GetId(), err)
			rc = 1
		}
		if err := rs.RemovePodSandbox(ctx, p.GetId()); err != nil {
			fmt.Fprintf(os.Stderr, "remove %s: %v\n", p.GetId(), err)
			rc = 1
		}
	}
	return rc
}
