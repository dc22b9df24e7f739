package main

import (
	"net/http"
	"os"

	"github.com/spf13/cobra"
	kubeadm "k8s.io/kubernetes/cmd/kubeadm/app/cmd"
)

// kubeadm, for the kind node image (e2e/kind/): kind runs `kubeadm init` / `kubeadm join`.
func newKubeadmCommand() *cobra.Command {
	return kubeadm.NewKubeadmCommand(os.Stdin, os.Stdout, os.Stderr)
}

// corednsMain stands in for CoreDNS in the kind node image: kubeadm's CoreDNS Deployment runs
// `/coredns -conf /etc/coredns/Corefile` and probes /health on :8080 and /ready on :8181.
// cluster-dns (dns.go) serves the cluster domain from the Service and EndpointSlice caches, with
// the in-cluster service account; the Corefile is ignored (no forwarding outside cluster.local).
func corednsMain(args []string) int {
	_ = args
	ok := func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("OK")) }
	health := http.NewServeMux()
	health.HandleFunc("/health", ok)
	ready := http.NewServeMux()
	ready.HandleFunc("/ready", ok)
	go func() { _ = http.ListenAndServe(":8080", health) }()
	go func() { _ = http.ListenAndServe(":8181", ready) }()
	return dnsMain([]string{"--listen=:53"})
}
