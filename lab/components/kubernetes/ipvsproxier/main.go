// Command knd-ipvs-proxier runs kube-proxy's own IPVS proxier (k8s.io/kubernetes/pkg/proxy/ipvs,
// the code `kube-proxy --proxy-mode ipvs` runs) for one lab node, on a kernel built without
// IP_VS.
//
// The lab's kernel has no ip_vs, so kube-proxy refuses ipvs mode and nothing can program a real
// IPVS table. This program keeps everything of ipvs mode that does not need ip_vs real:
// kube-proxy's informers on the lab's kube-apiserver, its service and endpoint change
// tracking, its sync loop, and kube-ipvs0 with one address per Service VIP, bound through
// netlink in the node's network namespace (the kernel has no dummy links either: the lab makes
// kube-ipvs0 an ifb link first, which kube-proxy then finds and uses). The kernel-facing parts
// ipvs mode cannot have here are kube-proxy's own in-memory fakes: the IPVS table
// (pkg/proxy/ipvs/util/testing), the ipsets (pkg/proxy/ipvs/ipset/testing), iptables
// (pkg/util/iptables/testing: the node keeps the iptables-mode kube-proxy's rules, which carry
// its traffic) and the net/ipv4/vs sysctls. After each change it writes what those fakes hold to --state as JSON
// (`ipvsadm -Ln` text, the iptables-save text of its nat and filter tables for IPv4 and IPv6,
// the ipsets as `ipset save` prints them), which the lab's IPVS recorder puts into a collected
// bundle where the node's own would be.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/events"
	sysctltest "k8s.io/component-helpers/node/util/sysctl/testing"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/proxy/apis"
	"k8s.io/kubernetes/pkg/proxy/config"
	"k8s.io/kubernetes/pkg/proxy/ipvs"
	"k8s.io/kubernetes/pkg/proxy/ipvs/ipset"
	ipsettest "k8s.io/kubernetes/pkg/proxy/ipvs/ipset/testing"
	utilipvs "k8s.io/kubernetes/pkg/proxy/ipvs/util"
	ipvstest "k8s.io/kubernetes/pkg/proxy/ipvs/util/testing"
	proxyutil "k8s.io/kubernetes/pkg/proxy/util"
	utiliptables "k8s.io/kubernetes/pkg/util/iptables"
	iptablestest "k8s.io/kubernetes/pkg/util/iptables/testing"
)

// One lock for every fake: the proxier's sync goroutine and its graceful-termination goroutine
// write them while the state writer reads them.
var mu sync.Mutex

type lockedIPVS struct{ f *ipvstest.FakeIPVS }

func (l lockedIPVS) Flush() error { mu.Lock(); defer mu.Unlock(); return l.f.Flush() }
func (l lockedIPVS) AddVirtualServer(s *utilipvs.VirtualServer) error {
	mu.Lock()
	defer mu.Unlock()
	return l.f.AddVirtualServer(s)
}
func (l lockedIPVS) UpdateVirtualServer(s *utilipvs.VirtualServer) error {
	mu.Lock()
	defer mu.Unlock()
	return l.f.UpdateVirtualServer(s)
}
func (l lockedIPVS) DeleteVirtualServer(s *utilipvs.VirtualServer) error {
	mu.Lock()
	defer mu.Unlock()
	return l.f.DeleteVirtualServer(s)
}
func (l lockedIPVS) GetVirtualServer(s *utilipvs.VirtualServer) (*utilipvs.VirtualServer, error) {
	mu.Lock()
	defer mu.Unlock()
	return l.f.GetVirtualServer(s)
}
func (l lockedIPVS) GetVirtualServers() ([]*utilipvs.VirtualServer, error) {
	mu.Lock()
	defer mu.Unlock()
	return l.f.GetVirtualServers()
}
func (l lockedIPVS) AddRealServer(s *utilipvs.VirtualServer, r *utilipvs.RealServer) error {
	mu.Lock()
	defer mu.Unlock()
	return l.f.AddRealServer(s, r)
}
func (l lockedIPVS) GetRealServers(s *utilipvs.VirtualServer) ([]*utilipvs.RealServer, error) {
	mu.Lock()
	defer mu.Unlock()
	return l.f.GetRealServers(s)
}
func (l lockedIPVS) DeleteRealServer(s *utilipvs.VirtualServer, r *utilipvs.RealServer) error {
	mu.Lock()
	defer mu.Unlock()
	return l.f.DeleteRealServer(s, r)
}
func (l lockedIPVS) UpdateRealServer(s *utilipvs.VirtualServer, r *utilipvs.RealServer) error {
	mu.Lock()
	defer mu.Unlock()
	return l.f.UpdateRealServer(s, r)
}
func (l lockedIPVS) ConfigureTimeouts(a, b, c time.Duration) error {
	mu.Lock()
	defer mu.Unlock()
	return l.f.ConfigureTimeouts(a, b, c)
}

// The iptables fake is read by SaveInto; every method that changes it takes the lock (the
// rest pass through the embedded interface).
type lockedIPT struct{ utiliptables.Interface }

func (l lockedIPT) EnsureChain(t utiliptables.Table, c utiliptables.Chain) (bool, error) {
	mu.Lock()
	defer mu.Unlock()
	return l.Interface.EnsureChain(t, c)
}
func (l lockedIPT) FlushChain(t utiliptables.Table, c utiliptables.Chain) error {
	mu.Lock()
	defer mu.Unlock()
	return l.Interface.FlushChain(t, c)
}
func (l lockedIPT) DeleteChain(t utiliptables.Table, c utiliptables.Chain) error {
	mu.Lock()
	defer mu.Unlock()
	return l.Interface.DeleteChain(t, c)
}

// EnsureRule quotes an argument with spaces (a comment) as iptables-save does: the fake keeps
// the rule as its arguments joined by spaces, and its dump is restored by iptables-restore.
func (l lockedIPT) EnsureRule(p utiliptables.RulePosition, t utiliptables.Table, c utiliptables.Chain, args ...string) (bool, error) {
	mu.Lock()
	defer mu.Unlock()
	return l.Interface.EnsureRule(p, t, c, quoted(args)...)
}

func quoted(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a
		if strings.ContainsAny(a, " \t") {
			out[i] = `"` + a + `"`
		}
	}
	return out
}
func (l lockedIPT) DeleteRule(t utiliptables.Table, c utiliptables.Chain, args ...string) error {
	mu.Lock()
	defer mu.Unlock()
	return l.Interface.DeleteRule(t, c, quoted(args)...)
}
func (l lockedIPT) Restore(t utiliptables.Table, data []byte, f utiliptables.FlushFlag, c utiliptables.RestoreCountersFlag) error {
	mu.Lock()
	defer mu.Unlock()
	return l.Interface.Restore(t, data, f, c)
}
func (l lockedIPT) RestoreAll(data []byte, f utiliptables.FlushFlag, c utiliptables.RestoreCountersFlag) error {
	mu.Lock()
	defer mu.Unlock()
	return l.Interface.RestoreAll(data, f, c)
}

// The ipset fake is read by ipsetSave; its writers take the lock.
type lockedIPSet struct{ *ipsettest.FakeIPSet }

func (l lockedIPSet) FlushSet(n string) error {
	mu.Lock()
	defer mu.Unlock()
	return l.FakeIPSet.FlushSet(n)
}
func (l lockedIPSet) DestroySet(n string) error {
	mu.Lock()
	defer mu.Unlock()
	return l.FakeIPSet.DestroySet(n)
}
func (l lockedIPSet) DestroyAllSets() error {
	mu.Lock()
	defer mu.Unlock()
	return l.FakeIPSet.DestroyAllSets()
}
func (l lockedIPSet) CreateSet(set *ipset.IPSet, ignoreExistErr bool) error {
	mu.Lock()
	defer mu.Unlock()
	return l.FakeIPSet.CreateSet(set, ignoreExistErr)
}
func (l lockedIPSet) AddEntry(entry string, set *ipset.IPSet, ignoreExistErr bool) error {
	mu.Lock()
	defer mu.Unlock()
	return l.FakeIPSet.AddEntry(entry, set, ignoreExistErr)
}
func (l lockedIPSet) DelEntry(entry string, set string) error {
	mu.Lock()
	defer mu.Unlock()
	return l.FakeIPSet.DelEntry(entry, set)
}
func (l lockedIPSet) ListEntries(set string) ([]string, error) {
	mu.Lock()
	defer mu.Unlock()
	return l.FakeIPSet.ListEntries(set)
}
func (l lockedIPSet) ListSets() ([]string, error) {
	mu.Lock()
	defer mu.Unlock()
	return l.FakeIPSet.ListSets()
}
func (l lockedIPSet) TestEntry(entry string, set string) (bool, error) {
	mu.Lock()
	defer mu.Unlock()
	return l.FakeIPSet.TestEntry(entry, set)
}

// ipvsadmText prints the virtual servers as `ipvsadm -Ln` does (ipvsadm 1.31's layout).
func ipvsadmText(f *ipvstest.FakeIPVS) string {
	var b strings.Builder
	b.WriteString("IP Virtual Server version 1.2.1 (size=4096)\n")
	b.WriteString("Prot LocalAddress:Port Scheduler Flags\n")
	b.WriteString("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")
	servers, _ := f.GetVirtualServers()
	sort.Slice(servers, func(i, j int) bool {
		a, c := servers[i], servers[j]
		if a.Protocol != c.Protocol {
			return a.Protocol > c.Protocol // ipvsadm lists TCP before UDP before SCTP
		}
		if !a.Address.Equal(c.Address) {
			return bytes.Compare(a.Address.To16(), c.Address.To16()) < 0
		}
		return a.Port < c.Port
	})
	for _, s := range servers {
		flags := ""
		if s.Flags&utilipvs.FlagPersistent != 0 {
			flags = fmt.Sprintf(" persistent %d", s.Timeout)
		}
		fmt.Fprintf(&b, "%-4s %s %s%s\n", s.Protocol, net.JoinHostPort(s.Address.String(), fmt.Sprint(s.Port)), s.Scheduler, flags)
		reals, _ := f.GetRealServers(s)
		sort.Slice(reals, func(i, j int) bool { return reals[i].String() < reals[j].String() })
		for _, r := range reals {
			fmt.Fprintf(&b, "  -> %-28s Masq    %-6d %-10d %d\n", net.JoinHostPort(r.Address.String(), fmt.Sprint(r.Port)), r.Weight, r.ActiveConn, r.InactiveConn)
		}
	}
	return b.String()
}

type state struct {
	Node      string `json:"node"`
	Ipvsadm   string `json:"ipvsadm"`
	Iptables  string `json:"iptables_save"`
	Ip6tables string `json:"ip6tables_save"`
	Ipsets    string `json:"ipset_save"`
}

func saveRules(f *iptablestest.FakeIPTables) string {
	var b bytes.Buffer
	for _, t := range []utiliptables.Table{utiliptables.TableNAT, utiliptables.TableFilter} {
		_ = f.SaveInto(t, &b)
	}
	return b.String()
}

// ipsetSave prints the sets as `ipset save` does, so `ipset restore` recreates them.
func ipsetSave(f *ipsettest.FakeIPSet) string {
	var b strings.Builder
	names := make([]string, 0, len(f.Sets))
	for n := range f.Sets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		set := *f.Sets[n]
		// The defaults kube-proxy's real ipset runner fills in when it creates a set (the fake
		// keeps the set as given).
		if set.HashSize == 0 {
			set.HashSize = 1024
		}
		if set.MaxElem == 0 {
			set.MaxElem = 65536
		}
		if set.HashFamily == "" {
			set.HashFamily = ipset.ProtocolFamilyIPV4
		}
		if set.PortRange == "" {
			set.PortRange = ipset.DefaultPortRange
		}
		fmt.Fprintf(&b, "create %s %s", n, set.SetType)
		if set.SetType == ipset.BitmapPort {
			fmt.Fprintf(&b, " range %s", set.PortRange)
		} else {
			fmt.Fprintf(&b, " family %s hashsize %d maxelem %d", set.HashFamily, set.HashSize, set.MaxElem)
		}
		fmt.Fprintf(&b, " comment\n")
		entries := f.Entries[n].List()
		sort.Strings(entries)
		for _, e := range entries {
			fmt.Fprintf(&b, "add %s %s\n", n, e)
		}
	}
	return b.String()
}

func snapshot(node string, fipvs *ipvstest.FakeIPVS, ipt4, ipt6 *iptablestest.FakeIPTables, fset *ipsettest.FakeIPSet) state {
	mu.Lock()
	defer mu.Unlock()
	return state{Node: node, Ipvsadm: ipvsadmText(fipvs), Iptables: saveRules(ipt4),
		Ip6tables: saveRules(ipt6), Ipsets: ipsetSave(fset)}
}

func write(path string, s state) error {
	data, err := json.MarshalIndent(s, "", " ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "the node's kubeconfig (kube-proxy's)")
	node := flag.String("hostname-override", "", "the node's name")
	nodeIP := flag.String("node-ip", "", "the node's address")
	clusterCIDR := flag.String("cluster-cidr", "", "the pod network, for kube-proxy's local-traffic detection")
	scheduler := flag.String("ipvs-scheduler", "rr", "the IPVS scheduler")
	masqBit := flag.Int("masquerade-bit", 14, "kube-proxy's masquerade mark bit")
	statePath := flag.String("state", "", "where to write the IPVS table and rules after each change (JSON)")
	klog.InitFlags(nil)
	flag.Parse()
	if *kubeconfig == "" || *node == "" || *nodeIP == "" || *statePath == "" {
		fmt.Fprintln(os.Stderr, "knd-ipvs-proxier: --kubeconfig, --hostname-override, --node-ip and --state are required")
		os.Exit(2)
	}
	ip := net.ParseIP(*nodeIP)
	if ip == nil {
		fmt.Fprintf(os.Stderr, "knd-ipvs-proxier: --node-ip %q is not an address\n", *nodeIP)
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		klog.Fatalf("kubeconfig: %v", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		klog.Fatalf("client: %v", err)
	}
	broadcaster := events.NewBroadcaster(&events.EventSinkImpl{Interface: client.EventsV1()})
	recorder := broadcaster.NewRecorder(nil, "kube-proxy")

	fipvs := ipvstest.NewFake()
	ipt4 := iptablestest.NewFake()
	ipt6 := iptablestest.NewIPv6Fake()
	fset := ipsettest.NewFake("7.1")
	detector := proxyutil.NewNoOpLocalDetector()
	if *clusterCIDR != "" {
		detector = proxyutil.NewDetectLocalByCIDR(*clusterCIDR)
	}
	// Dual-stack, as kube-proxy runs on a node whose iptables and ip6tables both work (the
	// lab's real kube-proxy does too): the IPv6 side has no node address, so kube-proxy's
	// server gives it the loopback.
	proxier, err := ipvs.NewDualStackProxier(ctx,
		map[v1.IPFamily]utiliptables.Interface{v1.IPv4Protocol: lockedIPT{ipt4}, v1.IPv6Protocol: lockedIPT{ipt6}},
		lockedIPVS{fipvs}, lockedIPSet{fset}, sysctltest.NewFake(), 30*time.Second, time.Second, nil,
		false, 0, 0, 0, false, *masqBit,
		map[v1.IPFamily]proxyutil.LocalTrafficDetector{v1.IPv4Protocol: detector, v1.IPv6Protocol: proxyutil.NewNoOpLocalDetector()},
		*node, map[v1.IPFamily]net.IP{v1.IPv4Protocol: ip, v1.IPv6Protocol: net.IPv6loopback},
		recorder, nil, *scheduler, nil, false)
	if err != nil {
		klog.Fatalf("ipvs proxier: %v", err)
	}

	// The informers kube-proxy's server.go sets up: no Service another proxy owns, no headless one.
	noProxyName, _ := labels.NewRequirement(apis.LabelServiceProxyName, selection.DoesNotExist, nil)
	noHeadless, _ := labels.NewRequirement(v1.IsHeadlessService, selection.DoesNotExist, nil)
	svcFactory := informers.NewSharedInformerFactoryWithOptions(client, 15*time.Minute,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = labels.NewSelector().Add(*noProxyName).String()
			o.FieldSelector = fields.OneTermNotEqualSelector("spec.clusterIP", v1.ClusterIPNone).String()
		}))
	epFactory := informers.NewSharedInformerFactoryWithOptions(client, 15*time.Minute,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = labels.NewSelector().Add(*noProxyName, *noHeadless).String()
		}))
	svcConfig := config.NewServiceConfig(ctx, svcFactory.Core().V1().Services(), 15*time.Minute)
	svcConfig.RegisterEventHandler(proxier)
	go svcConfig.Run(ctx.Done())
	epConfig := config.NewEndpointSliceConfig(ctx, epFactory.Discovery().V1().EndpointSlices(), 15*time.Minute)
	epConfig.RegisterEventHandler(proxier)
	go epConfig.Run(ctx.Done())
	svcFactory.Start(ctx.Done())
	epFactory.Start(ctx.Done())
	go proxier.SyncLoop()

	// Write the state whenever it changed: a second is as often as kube-proxy's own
	// minSyncPeriod lets it change.
	last := ""
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s := snapshot(*node, fipvs, ipt4, ipt6, fset)
		key := s.Ipvsadm + s.Iptables + s.Ip6tables + s.Ipsets
		if key == last {
			continue
		}
		if err := write(*statePath, s); err != nil {
			klog.Errorf("writing %s: %v", *statePath, err)
			continue
		}
		last = key
	}
}
