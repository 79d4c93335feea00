package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amqprpc/amqprpc/internal/brokertest"
)

func TestMain(m *testing.M) { brokertest.Main(m) }

// make bench's command prints the comparison table: a row per contender
// and point, ratios to the floor, and the targets line for one caller.
func TestTable(t *testing.T) {
	brokertest.Need(t)
	var out strings.Builder
	require.NoError(t, run([]string{"-url", brokertest.URL(), "-c", "1", "-body", "16", "-rounds", "1",
		"-duration", "100ms", "-warmup", "10ms", "-without", "mandatory"}, &out))
	table := out.String()
	for _, row := range []string{
		"| 16 B | 1 | amqprpc | ",
		"| 16 B | 1 | amqprpc, OpenTelemetry on | ",
		"| 16 B | 1 | floor: amqp091-go by hand | ",
		"| 16 B | 1 | floor with the same broker features | ",
		"| 16 B | 1 | floor with the same broker features, without mandatory | ",
		"| 16 B | 1 | net/rpc over TCP (no broker) | ",
		"| 16 B | 1 | 0x4b53/amqp-rpc v5 (defaults) | ",
	} {
		assert.Contains(t, table, row)
	}
	assert.Regexp(t, `\| 16 B \| 1 \| floor: amqp091-go by hand \| \d+ \| 1\.00 \|`, table, "the floor's ratio to itself")
	assert.Regexp(t, `- 1 caller, 16 B: p50 \d+\.\d\d× the floor's \(target ≤ 1\.05\); \d+\.\d\d× the floor with the same broker features`, table)
}

// -only takes |-separated contenders: a whole name runs that one alone
// (amqprpc, not its OpenTelemetry twin), a part of names every contender
// whose name holds it. -memprofile writes a profile.
func TestOnly(t *testing.T) {
	brokertest.Need(t)
	prof := filepath.Join(t.TempDir(), "mem.prof")
	var out strings.Builder
	require.NoError(t, run([]string{"-url", brokertest.URL(), "-c", "1", "-body", "16", "-rounds", "1",
		"-duration", "100ms", "-warmup", "10ms", "-only", "amqprpc|by hand|direct reply-to", "-direct-reply-to", "-memprofile", prof}, &out))
	rows := regexp.MustCompile(`(?m)^\| 16 B \| 1 \| ([^|]+) \|`).FindAllStringSubmatch(out.String(), -1)
	var names []string
	for _, r := range rows {
		names = append(names, strings.TrimSpace(r[1]))
	}
	assert.Equal(t, []string{"amqprpc", "floor: amqp091-go by hand", "floor, direct reply-to"}, names)
	st, err := os.Stat(prof)
	require.NoError(t, err)
	assert.Positive(t, st.Size(), "the allocation profile")
}

// Bad flags are errors, before anything is started.
func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-without", "bogus"},
		{"-c", "1,x"},
		{"-body", "0"},
		{"-rounds", "0"},
		{"-nosuchflag"},
	} {
		assert.Error(t, run(args, new(strings.Builder)), "%v", args)
	}
}
