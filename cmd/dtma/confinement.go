package main

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/docker"
	"github.com/spf13/cobra"
)

// readConfinement reads the settings that limit and isolate tool
// containers: default and maximum limits, the policy file and the network
// mode. Each problem is reported through bad, naming the flag.
func (c *config) readConfinement(cmd *cobra.Command, s *streams, bad func(name, why string)) {
	limits := func(prefix string) dtma.Limits {
		var l dtma.Limits
		if v := value(cmd, s, prefix+"-memory"); v != "" {
			n, err := dtma.ParseMemory(v)
			if err == nil && n != 0 && n < dtma.MinMemory {
				err = fmt.Errorf("must be 0 or at least %s", dtma.FormatMemory(dtma.MinMemory))
			}
			if err != nil {
				bad(prefix+"-memory", err.Error())
			}
			l.Memory = n
		}
		if v := value(cmd, s, prefix+"-pids"); v != "" {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil || n < 0 || (n != 0 && n < dtma.MinPIDs) || n > dtma.MaxPIDs {
				bad(prefix+"-pids", "must be 0 or a whole number from 16 to 4194304")
			}
			l.PIDs = n
		}
		if v := value(cmd, s, prefix+"-cpus"); v != "" {
			n, err := dtma.ParseCPUs(v)
			if err == nil && n != 0 && n < dtma.MinMilliCPUs {
				err = fmt.Errorf("must be 0 or at least 0.01")
			}
			if err != nil {
				bad(prefix+"-cpus", err.Error())
			}
			l.MilliCPUs = n
		}
		return l
	}
	c.DefaultLimits = limits("default")
	c.MaxLimits = limits("max")
	if value(cmd, s, "max-cpus") == "" {
		c.MaxLimits.MilliCPUs = int64(runtime.NumCPU()) * 1000
	}
	if f := value(cmd, s, "policy-file"); f != "" {
		data, err := os.ReadFile(f)
		if err != nil {
			bad("policy-file", err.Error())
		} else if p, err := dtma.ParsePolicy(data); err != nil {
			bad("policy-file", err.Error())
		} else {
			c.Policy = p
		}
	}
	c.Network = strings.ToLower(strings.TrimSpace(value(cmd, s, "network")))
	if c.Network != docker.NetworkIsolated && c.Network != docker.NetworkBridge {
		bad("network", "must be isolated or bridge")
	}
	n, err := strconv.Atoi(strings.TrimSpace(value(cmd, s, "network-shard-size")))
	if err != nil || n < 1 || n > docker.MaxShardSize {
		bad("network-shard-size", "must be a whole number from 1 to 1020")
	}
	c.NetworkShardSize = n
	c.NetworkSubnets = strings.TrimSpace(value(cmd, s, "network-subnets"))
	if c.NetworkSubnets != "" {
		p, err := netip.ParsePrefix(c.NetworkSubnets)
		switch {
		case err != nil || !p.Addr().Is4():
			bad("network-subnets", "must be an IPv4 prefix like 10.213.0.0/16")
		case n >= 1 && docker.SubnetBits(n) < p.Bits():
			bad("network-subnets", "too small for one network of "+strconv.Itoa(n)+" containers (needs a /"+strconv.Itoa(docker.SubnetBits(n))+")")
		}
	}
}
