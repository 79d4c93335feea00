package bench

import (
	"bytes"
	neturl "net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times; it is 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// BrokerPID finds the RabbitMQ node of this machine that listens on the
// port of url (its Erlang VM, beam.smp, owning the listening socket) and
// returns its process id, or 0 when there is none or /proc cannot be read:
// the broker may be remote, and then its CPU is not measured. Several nodes
// may run at once (the 3.10 node, the 4.3 one, a cluster): the port tells
// them apart. The node's CPU is all of it, whoever its other clients are.
func BrokerPID(url string) int {
	port := brokerPort(url)
	if port == 0 {
		return 0
	}
	inodes := listeningInodes(port)
	if len(inodes) == 0 {
		return 0
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil || !bytes.HasPrefix(comm, []byte("beam")) {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join(d, "fd"))
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(d, "fd", fd.Name()))
			if err == nil && inodes[link] {
				pid, _ := strconv.Atoi(filepath.Base(d))
				return pid
			}
		}
	}
	return 0
}

// brokerPort is the port of an amqp:// or amqps:// URL (the first of a
// comma-separated list), with the scheme's default.
func brokerPort(rawURL string) int {
	u, err := neturl.Parse(strings.TrimSpace(strings.Split(rawURL, ",")[0]))
	if err != nil {
		return 0
	}
	if p := u.Port(); p != "" {
		n, _ := strconv.Atoi(p)
		return n
	}
	if u.Scheme == "amqps" {
		return 5671
	}
	return 5672
}

// listeningInodes returns the socket inodes, as /proc/<pid>/fd links name
// them ("socket:[123]"), of the TCP sockets listening on port.
func listeningInodes(port int) map[string]bool {
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			// local_address is HEXIP:HEXPORT; st 0A is LISTEN; inode is field 9.
			if len(f) < 10 || f[3] != "0A" {
				continue
			}
			i := strings.LastIndexByte(f[1], ':')
			p, err := strconv.ParseInt(f[1][i+1:], 16, 32)
			if err == nil && int(p) == port {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	return inodes
}

// ProcessCPU returns the user+sys time that process pid has used so far, at
// the 10 ms resolution of /proc, or -1 if it cannot be read.
func ProcessCPU(pid int) time.Duration {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	// The command name, in parentheses, may hold spaces; fields count from
	// after it. utime and stime are fields 14 and 15 of the whole line.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return time.Duration(ut+st) * time.Second / clockTicks
}
