package transport

import (
	"crypto/tls"
	"net"
	"os"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSplitURLs(t *testing.T) {
	urls, err := SplitURLs(" amqp://u:p@a:5672/ , amqps://u:q@b:5671/vh,amqp://c/ ,")
	require.NoError(t, err)
	assert.Equal(t, []string{"amqp://u:p@a:5672/", "amqps://u:q@b:5671/vh", "amqp://c/"}, urls)

	urls, err = SplitURLs("amqp://u:p%2Cq@a/")
	require.NoError(t, err)
	assert.Equal(t, []string{"amqp://u:p%2Cq@a/"}, urls, "an encoded comma stays in the password")

	// Every URL net/url rejects: its errors quote the URL, and their
	// detail can hold part of a password ("invalid port ":secret"").
	for _, bad := range []string{"", " , ", "http://a/", "amqp://u:secret@a/,nonsense://u:secret@b/",
		"amqp://u:secret@a:bad/", "amqp://u:secret%zz@a/", "amqp://u:secret@[::1/", "amqp://u:pw/secret@a/",
		"amqps://u:secret@a:5671/vh,amqp://u:secret@b:x/"} {
		_, err := SplitURLs(bad)
		assert.Error(t, err, "%q", bad)
		if err != nil {
			assert.NotContains(t, err.Error(), "secret", "%q", bad)
		}
	}
}

// amqpConfig derives from a URL what amqp.DialConfig would: vhost,
// credentials and mechanisms, channel_max, and the heartbeat parameter over
// the configured one; its defaults are DialConfig's.
func TestAMQPConfig(t *testing.T) {
	config := func(t *testing.T, raw string, cfg Config) amqp.Config {
		t.Helper()
		uri, err := amqp.ParseURI(raw)
		require.NoError(t, err)
		c, err := amqpConfig(raw, uri, cfg)
		require.NoError(t, err)
		return c
	}

	c := config(t, "amqp://u:p@h:5672/vh", Config{Name: "n"})
	assert.Equal(t, "vh", c.Vhost)
	assert.Equal(t, 10*time.Second, c.Heartbeat)
	assert.Equal(t, 64<<20, c.FrameSize, "the broker's frame_max wins when smaller")
	assert.Equal(t, "en_US", c.Locale)
	assert.Equal(t, "n", c.Properties["connection_name"])
	require.Len(t, c.SASL, 1)
	assert.Equal(t, "PLAIN", c.SASL[0].Mechanism())
	assert.Equal(t, "\x00u\x00p", c.SASL[0].Response())

	c = config(t, "amqp://u:p@h/?heartbeat=3&channel_max=7&auth_mechanism=amqplain&auth_mechanism=external",
		Config{Heartbeat: 20 * time.Second})
	assert.Equal(t, 3*time.Second, c.Heartbeat, "the URL's heartbeat wins")
	assert.Equal(t, uint16(7), c.ChannelMax)
	var mechanisms []string
	for _, a := range c.SASL {
		mechanisms = append(mechanisms, a.Mechanism())
	}
	assert.Equal(t, []string{"AMQPLAIN", "EXTERNAL"}, mechanisms)

	c = config(t, "amqp://h/?heartbeat=0", Config{Heartbeat: 20 * time.Second})
	assert.Zero(t, c.Heartbeat, "heartbeat=0 asks for none, as in DialConfig")

	raw := "amqp://u:secret@h/?auth_mechanism=bogus"
	uri, err := amqp.ParseURI(raw)
	require.NoError(t, err)
	_, err = amqpConfig(raw, uri, Config{})
	assert.ErrorContains(t, err, "unsupported auth_mechanism")

	_, err = ParseURI("amqp://u:secret@a:bad/")
	assert.ErrorIs(t, err, errUnparsableURL)
	_, err = ParseURI("nonsense://a/")
	assert.ErrorContains(t, err, "scheme", "amqp091-go's own errors pass")
}

// The TLS configuration is a clone of the caller's, or amqp091-go's from
// the URL's server_name_indication; its ServerName is the node's host when
// neither names one.
func TestTLSConfigFor(t *testing.T) {
	uri, err := amqp.ParseURI("amqps://h1:5671/")
	require.NoError(t, err)
	given := &tls.Config{MinVersion: tls.VersionTLS13}
	c, err := tlsConfigFor(uri, given)
	require.NoError(t, err)
	assert.Equal(t, "h1", c.ServerName)
	assert.Empty(t, given.ServerName, "the caller's config is not changed")
	assert.Equal(t, uint16(tls.VersionTLS13), c.MinVersion)

	uri, err = amqp.ParseURI("amqps://h2:5671/?server_name_indication=broker.example")
	require.NoError(t, err)
	c, err = tlsConfigFor(uri, nil)
	require.NoError(t, err)
	assert.Equal(t, "broker.example", c.ServerName)

	uri, err = amqp.ParseURI("amqps://h3:5671/?cacertfile=/nonexistent/ca.pem")
	require.NoError(t, err)
	_, err = tlsConfigFor(uri, nil)
	assert.ErrorContains(t, err, "read CA certificate")
}

// deadlineConn hides SetReadDeadline from amqp091-go, and moves the read
// deadline itself: reads go on while bytes keep coming, and fail once the
// link is silent for the timeout.
func TestDeadlineConn(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	dc := &deadlineConn{conn: a}
	defer dc.Close()
	_, ok := any(dc).(interface{ SetReadDeadline(time.Time) error })
	assert.False(t, ok, "amqp091-go must not see SetReadDeadline")

	const timeout = 200 * time.Millisecond
	dc.timeout.Store(int64(timeout))
	go func() {
		for range 10 { // 500 ms of traffic, over twice the timeout
			if _, err := b.Write([]byte{1}); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	p := make([]byte, 1)
	for i := range 10 {
		_, err := dc.Read(p)
		require.NoError(t, err, "read %d", i)
	}
	silent := time.Now()
	_, err := dc.Read(p)
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	took := time.Since(silent)
	assert.Less(t, took, timeout+timeout/4+100*time.Millisecond, "noticed after 1.25 timeouts at most")
	assert.Greater(t, took, timeout-timeout/4, "never less than the timeout from the last byte")
}
