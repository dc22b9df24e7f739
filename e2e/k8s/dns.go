package main

// A minimal cluster DNS server (the CoreDNS stand-in of kind.go; CoreDNS is
// not built here). It answers, from informer caches:
//
//	<svc>.<ns>.svc.<domain>              A: the ClusterIP, or for a headless
//	                                     Service its ready endpoint addresses
//	<host>.<svc>.<ns>.svc.<domain>       A: the endpoint with that hostname
//	                                     (StatefulSet pods behind a headless
//	                                     Service)
//	<a-b-c-d>.<ns>.pod.<domain>          A: a.b.c.d
//	_<port>._<proto>.<svc>.<ns>.svc...   SRV for named Service ports
//
// Existing names with no record of the asked type get an empty NOERROR
// answer; everything else is NXDOMAIN. Nothing is forwarded anywhere, so
// no DNS traffic leaves the machine. UDP and TCP.

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/clientcmd"
)

type clusterDNS struct {
	domain   string // "cluster.local." (lower case, trailing dot)
	ttl      uint32
	services corelisters.ServiceLister
	slices   discoverylisters.EndpointSliceLister
}

func dnsMain(args []string) int {
	fs := flag.NewFlagSet("cluster-dns", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file")
	listen := fs.String("listen", "127.0.0.1:53", "UDP and TCP address to serve on")
	domain := fs.String("domain", "cluster.local", "cluster domain")
	ttl := fs.Uint("ttl", 5, "TTL of answers, seconds")
	_ = fs.Parse(args)

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster-dns: %v\n", err)
		return 1
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster-dns: %v\n", err)
		return 1
	}
	factory := informers.NewSharedInformerFactory(cs, 10*time.Minute)
	d := &clusterDNS{
		domain:   strings.ToLower(strings.TrimSuffix(*domain, ".")) + ".",
		ttl:      uint32(*ttl),
		services: factory.Core().V1().Services().Lister(),
		slices:   factory.Discovery().V1().EndpointSlices().Lister(),
	}
	ctx := context.Background()
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			fmt.Fprintf(os.Stderr, "cluster-dns: cache sync failed for %v\n", typ)
			return 1
		}
	}

	pc, err := net.ListenPacket("udp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster-dns: %v\n", err)
		return 1
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster-dns: %v\n", err)
		return 1
	}
	logf2("cluster-dns: serving %s on %s (udp+tcp)", d.domain, *listen)
	go d.serveTCP(ln)
	buf := make([]byte, 1500)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			logf2("cluster-dns: udp read: %v", err)
			continue
		}
		if resp := d.handle(buf[:n], 512); resp != nil {
			_, _ = pc.WriteTo(resp, addr)
		}
	}
}

func logf2(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format(time.RFC3339), fmt.Sprintf(format, a...))
}

func (d *clusterDNS) serveTCP(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			logf2("cluster-dns: tcp accept: %v", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go func(c net.Conn) {
			defer c.Close()
			for {
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				msg := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, msg); err != nil {
					return
				}
				resp := d.handle(msg, 65535)
				if resp == nil {
					return
				}
				out := make([]byte, 2, 2+len(resp))
				binary.BigEndian.PutUint16(out, uint16(len(resp)))
				if _, err := c.Write(append(out, resp...)); err != nil {
					return
				}
			}
		}(c)
	}
}

// handle parses one query and returns the packed response (nil: drop).
func (d *clusterDNS) handle(req []byte, maxSize int) []byte {
	var p dnsmessage.Parser
	hdr, err := p.Start(req)
	if err != nil || hdr.Response {
		return nil
	}
	q, err := p.Question()
	rh := dnsmessage.Header{ID: hdr.ID, Response: true, Authoritative: true, RecursionDesired: hdr.RecursionDesired}
	if err != nil || hdr.OpCode != 0 {
		rh.RCode = dnsmessage.RCodeFormatError
		if err == nil {
			rh.RCode = dnsmessage.RCodeNotImplemented
		}
		return pack(rh, nil, nil, maxSize, d.ttl)
	}
	name := strings.ToLower(q.Name.String())
	exists, answers := d.lookup(name, q.Type)
	if !exists {
		rh.RCode = dnsmessage.RCodeNameError
	}
	return pack(rh, &q, answers, maxSize, d.ttl)
}

type answer struct {
	a   *netip.Addr
	srv *dnsmessage.SRVResource
}

func pack(h dnsmessage.Header, q *dnsmessage.Question, answers []answer, maxSize int, ttl uint32) []byte {
	for {
		b := dnsmessage.NewBuilder(make([]byte, 0, 512), h)
		b.EnableCompression()
		_ = b.StartQuestions()
		if q != nil {
			_ = b.Question(*q)
		}
		_ = b.StartAnswers()
		for _, a := range answers {
			rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: ttl}
			if a.a != nil {
				_ = b.AResource(rh, dnsmessage.AResource{A: a.a.As4()})
			} else if a.srv != nil {
				_ = b.SRVResource(rh, *a.srv)
			}
		}
		out, err := b.Finish()
		if err != nil {
			return nil
		}
		if len(out) <= maxSize || len(answers) == 0 {
			return out
		}
		// Too big for UDP: set TC and send no answers; the client retries on TCP.
		h.Truncated = true
		answers = nil
	}
}

// lookup resolves name (lower case, FQDN) for type t.
func (d *clusterDNS) lookup(name string, t dnsmessage.Type) (bool, []answer) {
	if !strings.HasSuffix(name, "."+d.domain) {
		return false, nil
	}
	parts := strings.Split(strings.TrimSuffix(name, "."+d.domain), ".")
	n := len(parts)
	switch {
	case n == 3 && parts[2] == "pod": // a-b-c-d.ns.pod
		ip, err := netip.ParseAddr(strings.ReplaceAll(parts[0], "-", "."))
		if err != nil || !ip.Is4() {
			return false, nil
		}
		if t == dnsmessage.TypeA || t == dnsmessage.TypeALL {
			return true, []answer{{a: &ip}}
		}
		return true, nil
	case n >= 3 && parts[n-1] == "svc":
		ns, svcName := parts[n-2], parts[n-3]
		svc, err := d.services.Services(ns).Get(svcName)
		if err != nil {
			return false, nil
		}
		switch n {
		case 3: // svc.ns.svc
			return true, d.serviceAnswers(svc, t, "")
		case 4: // host.svc.ns.svc
			ans := d.serviceAnswers(svc, dnsmessage.TypeA, parts[0])
			if len(ans) == 0 {
				return false, nil
			}
			if t == dnsmessage.TypeA || t == dnsmessage.TypeALL {
				return true, ans
			}
			return true, nil
		case 5: // _port._proto.svc.ns.svc
			if !strings.HasPrefix(parts[0], "_") || !strings.HasPrefix(parts[1], "_") {
				return false, nil
			}
			for _, p := range svc.Spec.Ports {
				if p.Name == parts[0][1:] && strings.EqualFold(string(p.Protocol), parts[1][1:]) {
					if t != dnsmessage.TypeSRV && t != dnsmessage.TypeALL {
						return true, nil
					}
					target, _ := dnsmessage.NewName(svcName + "." + ns + ".svc." + d.domain)
					return true, []answer{{srv: &dnsmessage.SRVResource{Priority: 0, Weight: 100, Port: uint16(p.Port), Target: target}}}
				}
			}
			return false, nil
		}
	}
	return false, nil
}

// serviceAnswers: the ClusterIP, or (headless) the endpoint addresses,
// optionally only those whose endpoint hostname is host.
func (d *clusterDNS) serviceAnswers(svc *corev1.Service, t dnsmessage.Type, host string) []answer {
	if t != dnsmessage.TypeA && t != dnsmessage.TypeALL {
		return nil
	}
	if host == "" && svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
		if err != nil || !ip.Is4() {
			return nil
		}
		return []answer{{a: &ip}}
	}
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc.Name})
	slices, err := d.slices.EndpointSlices(svc.Namespace).List(sel)
	if err != nil {
		return nil
	}
	var out []answer
	seen := map[netip.Addr]bool{}
	for _, s := range slices {
		if s.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		for _, ep := range s.Endpoints {
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			if !ready && !svc.Spec.PublishNotReadyAddresses {
				continue
			}
			if host != "" && (ep.Hostname == nil || !strings.EqualFold(*ep.Hostname, host)) {
				continue
			}
			for _, a := range ep.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil || !ip.Is4() || seen[ip] {
					continue
				}
				seen[ip] = true
				out = append(out, answer{a: &ip})
			}
		}
	}
	return out
}
