package docker

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/bits"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/agentopia/dtma"
)

// Network modes (Options.Network).
const (
	// NetworkIsolated puts every tool container on a DTMA-owned bridge
	// network of its host with inter-container traffic off (the default).
	NetworkIsolated = "isolated"
	// NetworkBridge leaves tool containers on Docker's default bridge, as
	// before isolation existed; for hosts where isolation cannot work.
	NetworkBridge = "bridge"
)

// Network labels and options.
const (
	// LabelNetworkShard is the shard number of a DTMA network ("0", "1",
	// ...); with dtma.managed and dtma.host it identifies the network.
	LabelNetworkShard = "dtma.network-shard"
	// iccOption turns inter-container traffic on a bridge off.
	iccOption = "com.docker.network.bridge.enable_icc"
	// DefaultShardSize is how many containers one network takes by
	// default: a Linux bridge holds at most 1023 ports ("exchange full"
	// beyond), so a little room is left.
	DefaultShardSize = 1000
	// MaxShardSize is the most a shard may be configured to take.
	MaxShardSize = 1020
)

// networks chooses (and creates on demand) the network each new container
// of a host joins. It serialises the choice within this process and counts
// the creates it has handed a network to but that have not finished, so
// that concurrent deploys never overfill a shard.
//
// It also keeps, per host, the shards and how many containers each holds
// as last counted from Docker plus the creates this process finished on
// them since: a deploy then asks Docker nothing when a shard has room.
// Counting a shard lists its containers, which costs tens of milliseconds
// with a thousand of them (the 1.32x sequential deploy ratio).
// The counts are refreshed from Docker when they are older than
// shardCountTTL, after any remove (a container gone frees room), after a
// failed create, and before a shard is ever taken as full or a new one
// created. Containers attached or removed behind the agent's back are
// therefore seen within shardCountTTL, and never make the agent create a
// shard it does not need.
type networks struct {
	mu       sync.Mutex
	inflight map[string]int         // network id -> creates in progress
	hosts    map[string]*shardCount // host id -> its shards as counted
}

// shardCount is one host's shards with their container counts.
type shardCount struct {
	list    []shardNet
	count   map[string]int // network id -> containers on it
	counted time.Time      // when list and count were read from Docker
}

// shardCountTTL bounds how long a shard's container count is trusted
// without asking Docker again.
const shardCountTTL = 30 * time.Second

// NetworkName returns the name of shard n of hostID's networks:
// "dtma-<host id slug>-<hash>-<n>". The hash keeps host ids that slug alike
// apart; the labels, not the name, are what the agent finds them by.
func NetworkName(hostID string, n int) string {
	sum := sha256.Sum256([]byte(hostID))
	slug := strings.Trim(dtma.ContainerName(hostID)[len("dtma-"):], "-")
	if len(slug) > 32 {
		slug = strings.Trim(slug[:32], "-")
	}
	if slug == "" {
		slug = "host"
	}
	return "dtma-" + slug + "-" + hex.EncodeToString(sum[:4]) + "-" + strconv.Itoa(n)
}

// shardNet is one of a host's networks as listed.
type shardNet struct {
	id, name string
	shard    int
}

// pickNetwork returns the id of the network a new container of hostID
// joins: the lowest shard with room (containers attached, stopped ones
// included, plus creates in progress below the shard size), creating the
// next shard when all are full. Networks are found by their labels, so a
// restarted agent finds the ones it made before. Should a shard exist
// twice (a create the daemon finished after the agent that asked was
// killed, while the restarted agent made its own), both are used like any
// other network: containers name their network by id, never by the
// ambiguous name. The counts come from the host's kept counts when they
// are fresh (see networks). release must be called once the container
// create has finished, with whether it created the container.
func (r *Runtime) pickNetwork(ctx context.Context, hostID string) (id string, release func(created bool), err error) {
	if hostID == "" {
		return "", nil, dtma.Errorf(dtma.EINTERNAL, "an isolated container needs a %s label", dtma.LabelHost)
	}
	r.nets.mu.Lock()
	defer r.nets.mu.Unlock()
	sc := r.nets.hosts[hostID]
	fresh := false
	if sc == nil || time.Since(sc.counted) > shardCountTTL {
		if sc, err = r.countShards(ctx, hostID); err != nil {
			return "", nil, err
		}
		fresh = true
	}
	for {
		next := 0
		for _, n := range sc.list {
			if n.shard >= next {
				next = n.shard + 1
			}
			if sc.count[n.id]+r.nets.inflight[n.id] < r.shardSize {
				return n.id, r.hold(hostID, n.id), nil
			}
		}
		if !fresh {
			// Full as far as this process knows: ask Docker before
			// taking every shard as full.
			if sc, err = r.countShards(ctx, hostID); err != nil {
				return "", nil, err
			}
			fresh = true
			continue
		}
		id, err = r.createNetwork(ctx, hostID, next)
		if err != nil {
			return "", nil, err
		}
		sc.list = append(sc.list, shardNet{id: id, name: NetworkName(hostID, next), shard: next})
		sc.count[id] = 0
		return id, r.hold(hostID, id), nil
	}
}

// countShards lists hostID's networks and counts the containers on each
// (stopped ones included: they take a port when started), and keeps the
// result as the host's counts. Caller holds r.nets.mu.
func (r *Runtime) countShards(ctx context.Context, hostID string) (*shardCount, error) {
	list, err := r.hostNetworks(ctx, hostID)
	if err != nil {
		return nil, err
	}
	sc := &shardCount{list: list, count: make(map[string]int, len(list)), counted: time.Now()}
	for _, n := range list {
		res, err := r.client.ContainerList(ctx, client.ContainerListOptions{
			All:     true,
			Filters: make(client.Filters).Add("network", n.id),
		})
		if err != nil {
			return nil, r.wrap(err, "count containers on network %s", n.name)
		}
		sc.count[n.id] = len(res.Items)
	}
	if r.nets.hosts == nil {
		r.nets.hosts = map[string]*shardCount{}
	}
	r.nets.hosts[hostID] = sc
	return sc, nil
}

// forgetCounts makes the next pick for hostID count its shards again.
// Caller holds r.nets.mu.
func (r *Runtime) forgetCounts(hostID string) {
	delete(r.nets.hosts, hostID)
}

// pruneNetworks removes hostID's network shards above the first (shard 0
// stays: the next deploy needs it) that no container is attached to and no
// create is about to use. Only networks labelled for this host are
// considered. A failure is logged nowhere and retried at the next remove:
// an empty shard left behind costs nothing but a bridge.
func (r *Runtime) pruneNetworks(ctx context.Context, hostID string) {
	r.nets.mu.Lock()
	defer r.nets.mu.Unlock()
	// A container is gone: its shard has room again.
	r.forgetCounts(hostID)
	list, err := r.hostNetworks(ctx, hostID)
	if err != nil || len(list) < 2 {
		return
	}
	for _, n := range list[1:] {
		if r.nets.inflight[n.id] > 0 {
			continue
		}
		res, err := r.client.ContainerList(ctx, client.ContainerListOptions{
			All:     true,
			Filters: make(client.Filters).Add("network", n.id),
		})
		if err != nil || len(res.Items) > 0 {
			continue
		}
		_, _ = r.client.NetworkRemove(ctx, n.id, client.NetworkRemoveOptions{})
	}
}

// hold counts a create in progress on network id of hostID; the returned
// func releases it, counting the container on the network when created is
// true and making the next pick count the host's shards again otherwise
// (a failed create may mean the network is gone). Caller holds r.nets.mu.
func (r *Runtime) hold(hostID, id string) func(created bool) {
	if r.nets.inflight == nil {
		r.nets.inflight = map[string]int{}
	}
	r.nets.inflight[id]++
	var once sync.Once
	return func(created bool) {
		once.Do(func() {
			r.nets.mu.Lock()
			defer r.nets.mu.Unlock()
			if r.nets.inflight[id]--; r.nets.inflight[id] <= 0 {
				delete(r.nets.inflight, id)
			}
			if sc := r.nets.hosts[hostID]; sc != nil && created {
				sc.count[id]++
			} else if !created {
				r.forgetCounts(hostID)
			}
		})
	}
}

// hostNetworks lists hostID's DTMA networks by label, lowest shard first
// (of two with one shard number, the older first).
func (r *Runtime) hostNetworks(ctx context.Context, hostID string) ([]shardNet, error) {
	res, err := r.client.NetworkList(ctx, client.NetworkListOptions{
		Filters: make(client.Filters).Add("label", dtma.LabelManaged+"=true").Add("label", dtma.LabelHost+"="+hostID),
	})
	if err != nil {
		return nil, r.wrap(err, "list networks of host %s", hostID)
	}
	var out []shardNet
	created := map[string]int64{}
	for _, n := range res.Items {
		if n.Labels[dtma.LabelHost] != hostID {
			continue
		}
		shard, err := strconv.Atoi(n.Labels[LabelNetworkShard])
		if err != nil || shard < 0 {
			continue
		}
		out = append(out, shardNet{id: n.ID, name: n.Name, shard: shard})
		created[n.ID] = n.Created.UnixNano()
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].shard != out[j].shard {
			return out[i].shard < out[j].shard
		}
		if created[out[i].id] != created[out[j].id] {
			return created[out[i].id] < created[out[j].id]
		}
		return out[i].id < out[j].id
	})
	return out, nil
}

// createNetwork creates shard n of hostID's networks: a bridge with
// inter-container traffic off, labelled dtma.managed, dtma.host, the shard
// number and the runtime's extra labels, on a subnet of Options.
// NetworkSubnets when set (Docker's default address pools otherwise). It
// returns the new network's id.
func (r *Runtime) createNetwork(ctx context.Context, hostID string, n int) (string, error) {
	name := NetworkName(hostID, n)
	labels := make(map[string]string, len(r.extraLabels)+3)
	for k, v := range r.extraLabels {
		labels[k] = v
	}
	labels[dtma.LabelManaged] = "true"
	labels[dtma.LabelHost] = hostID
	labels[LabelNetworkShard] = strconv.Itoa(n)
	opts := client.NetworkCreateOptions{
		Driver:  "bridge",
		Options: map[string]string{iccOption: "false"},
		Labels:  labels,
	}
	if !r.subnets.IsValid() {
		res, err := r.client.NetworkCreate(ctx, name, opts)
		if err != nil {
			return "", r.wrap(err, "create network %s", name)
		}
		return res.ID, nil
	}
	// Pick a free subnet of the pool: start at a place derived from the
	// host id (agents sharing a daemon spread out), skip subnets other
	// networks use, and move on when Docker finds an overlap anyway
	// (another agent took it meanwhile).
	used, err := r.usedSubnets(ctx)
	if err != nil {
		return "", err
	}
	count := 1 << (r.subnetBits - r.subnets.Bits())
	sum := sha256.Sum256([]byte(hostID))
	start := int(binary.BigEndian.Uint32(sum[:4])%uint32(count)) + n
	var lastErr error
	tries := 0
	for i := 0; i < count && tries < 8; i++ {
		sub := nthSubnet(r.subnets, r.subnetBits, (start+i)%count)
		if overlapsAny(sub, used) {
			continue
		}
		tries++
		opts.IPAM = &network.IPAM{Config: []network.IPAMConfig{{Subnet: sub}}}
		res, err := r.client.NetworkCreate(ctx, name, opts)
		if err == nil {
			return res.ID, nil
		}
		lastErr = err
		if !strings.Contains(strings.ToLower(err.Error()), "overlap") {
			break
		}
		used = append(used, sub)
	}
	if lastErr == nil {
		return "", dtma.Errorf(dtma.EUNAVAILABLE, "create network %s: no free /%d subnet left in %s", name, r.subnetBits, r.subnets)
	}
	return "", r.wrap(lastErr, "create network %s", name)
}

// usedSubnets lists the IPv4 subnets of every network on the daemon.
func (r *Runtime) usedSubnets(ctx context.Context) ([]netip.Prefix, error) {
	res, err := r.client.NetworkList(ctx, client.NetworkListOptions{})
	if err != nil {
		return nil, r.wrap(err, "list networks")
	}
	var out []netip.Prefix
	for _, n := range res.Items {
		for _, c := range n.IPAM.Config {
			if c.Subnet.IsValid() {
				out = append(out, c.Subnet.Masked())
			}
		}
	}
	return out, nil
}

func overlapsAny(p netip.Prefix, list []netip.Prefix) bool {
	for _, q := range list {
		if p.Overlaps(q) {
			return true
		}
	}
	return false
}

// nthSubnet returns the i-th /bits subnet of pool (IPv4).
func nthSubnet(pool netip.Prefix, bits, i int) netip.Prefix {
	base := pool.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(base[:]) + uint32(i)<<(32-bits)
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.PrefixFrom(netip.AddrFrom4(b), bits)
}

// SubnetBits returns the prefix length of the smallest IPv4 subnet that
// holds shardSize containers plus the network, gateway and broadcast
// addresses: 1000 gives /22 (1021 usable).
func SubnetBits(shardSize int) int {
	return 32 - bits.Len(uint(shardSize+2))
}

// checkSubnets validates a subnet pool for a shard size.
func checkSubnets(pool netip.Prefix, shardSize int) error {
	if !pool.Addr().Is4() {
		return fmt.Errorf("network subnets %s: must be an IPv4 prefix", pool)
	}
	if SubnetBits(shardSize) < pool.Bits() {
		return fmt.Errorf("network subnets %s: too small for one shard of %d containers (needs a /%d)", pool, shardSize, SubnetBits(shardSize))
	}
	return nil
}
