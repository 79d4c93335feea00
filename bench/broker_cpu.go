package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times; it is 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// BrokerPID finds a RabbitMQ node running on this machine (its Erlang VM,
// beam.smp) and returns its process id, or 0 when there is none or /proc
// cannot be read: the broker may be remote, and then its CPU is not
// measured. It does not check that the benchmark's URL points at it, and
// the node's CPU is all of it, whoever its other clients are.
func BrokerPID() int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil || !bytes.HasPrefix(comm, []byte("beam")) {
			continue
		}
		// The node boots with "-s rabbit boot"; rabbitmqctl and the other
		// command-line tools run on beam too, but do not.
		cmd, _ := os.ReadFile(filepath.Join(d, "cmdline"))
		if !bytes.Contains(cmd, []byte("-s\x00rabbit\x00boot")) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(d))
		return pid
	}
	return 0
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
