package amqprpc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/rpc"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/amqprpc/amqprpc/internal/brokertest"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// selfSignedListener accepts TLS connections with a certificate nobody
// trusts, and never speaks AMQP.
func selfSignedListener(t *testing.T) string {
	addr, _ := tlsListener(t, nil)
	return addr
}

// tlsListener accepts TLS connections with a self-signed certificate for
// 127.0.0.1 and returns its address and a pool that trusts it. With serve
// set, it hands each connection, handshake done, to serve; else it closes
// it after the handshake.
func tlsListener(t *testing.T, serve func(net.Conn)) (string, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
	})
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := conn.(*tls.Conn).Handshake(); err != nil || serve == nil {
					_ = conn.Close()
					return
				}
				serve(conn)
			}()
		}
	}()
	return ln.Addr().String(), pool
}

// tlsInFrontOfBroker is a TLS terminator in front of the test broker, like
// a broker's own TLS listener: it returns an amqps:// URL for it and a pool
// that trusts its certificate.
func tlsInFrontOfBroker(t *testing.T) (string, *x509.CertPool) {
	t.Helper()
	brokertest.Need(t)
	broker, err := url.Parse(brokertest.URL())
	require.NoError(t, err)
	port := broker.Port()
	if port == "" {
		port = "5672"
	}
	addr, pool := tlsListener(t, func(c net.Conn) {
		defer c.Close()
		b, err := net.Dial("tcp", net.JoinHostPort(broker.Hostname(), port))
		if err != nil {
			return
		}
		defer b.Close()
		done := make(chan struct{}, 2)
		go func() { _, _ = io.Copy(b, c); done <- struct{}{} }()
		go func() { _, _ = io.Copy(c, b); done <- struct{}{} }()
		<-done // one side ended: end both
	})
	u := *broker
	u.Scheme, u.Host = "amqps", addr
	return u.String(), pool
}

// amqps:// verifies the broker's certificate unless the caller's tls.Config
// says otherwise, and the password never shows in the error.
func TestTLSVerifiesByDefault(t *testing.T) {
	addr := selfSignedListener(t)
	url := "amqps://user:s3cret@" + addr + "/"

	_, err := Dial(url, "ns")
	var unknown x509.UnknownAuthorityError
	require.ErrorAs(t, err, &unknown, "an untrusted certificate is refused")
	assert.NotContains(t, err.Error(), "s3cret")

	_, err = Dial(url, "ns", WithTLS(&tls.Config{InsecureSkipVerify: true}))
	require.Error(t, err, "not a broker")
	assert.False(t, errorsAsUnknownAuthority(err), "verification was off as asked")
	assert.NotContains(t, err.Error(), "s3cret")
}

// amqps:// end to end: a server and a client that trust the broker's
// certificate serve and make calls over TLS, and come back over TLS after
// the broker closes every connection.
func TestTLSToTheBroker(t *testing.T) {
	amqps, pool := tlsInFrontOfBroker(t)
	ns := brokertest.Namespace(t)
	trust := WithTLS(&tls.Config{RootCAs: pool})
	s, err := NewServer(amqps, ns, newRPCServer(t, new(Math)), trust)
	require.NoError(t, err)
	brokertest.Serve(t, s.Serve, s.Close)
	tc, err := Dial(amqps, ns, trust)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, tc.Close()) })

	var sum int
	require.NoError(t, tc.Call("Math.SumNumbers", []int{1, 2, 3, 4}, &sum))
	assert.Equal(t, 10, sum)

	brokertest.Rabbitmqctl(t, "close_all_connections", "test")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, tc.CallContext(ctx, "Math.SumNumbers", []int{5, 6}, &sum))
	assert.Equal(t, 11, sum)

	_, err = Dial(amqps, ns)
	var unknown x509.UnknownAuthorityError
	require.ErrorAs(t, err, &unknown, "without the pool, the certificate is not trusted")
}

func errorsAsUnknownAuthority(err error) bool {
	var unknown x509.UnknownAuthorityError
	return errors.As(err, &unknown)
}

// Forged and garbled replies: unknown ids and duplicates are dropped and
// counted; a garbled body fails only the call it answers; the client goes
// on working.
func TestGarbledReplies(t *testing.T) {
	ns := brokertest.Namespace(t)
	c := dial(t, ns)
	ch := brokertest.Channel(t)
	requests, err := ch.Consume("rpc_"+ns+"_request", "", true, false, false, false, nil)
	require.NoError(t, err)
	reply := func(corr, contentType string, body []byte) {
		require.NoError(t, ch.Publish("rpc_"+ns+"_response", c.ID(), false, false, amqp.Publishing{
			CorrelationId: corr, ContentType: contentType, Body: body,
		}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, tc := range []struct {
		name, contentType string
		body              []byte
		want              string
	}{
		{"garbage msgpack", "application/msgpack", []byte{0xc1, 0xc1}, "malformed body"},
		{"allocation bomb", "application/msgpack", []byte{0xdd, 0x0f, 0xff, 0xff, 0xff}, "malformed body"},
		{"unknown content type", "text/x-nope", []byte("1"), "unknown content type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sum []int
			done := make(chan error, 1)
			go func() { done <- c.CallContext(ctx, "Math.Numbers", 1, &sum) }()
			d := <-requests
			reply("bogus."+d.CorrelationId, tc.contentType, tc.body) // forged id: dropped
			reply(d.CorrelationId, tc.contentType, tc.body)
			err := <-done
			require.ErrorIs(t, err, ErrBadReply)
			assert.NotErrorAs(t, err, new(rpc.ServerError), "a local failure, not the server's word")
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	assert.Equal(t, uint64(3), c.Dropped())

	// Still working.
	go func() {
		d := <-requests
		reply(d.CorrelationId, "application/msgpack", []byte{0x92, 0x01, 0x02}) // [1, 2]
	}()
	var sum []int
	require.NoError(t, c.CallContext(ctx, "Math.Numbers", 1, &sum))
	assert.Equal(t, []int{1, 2}, sum)
}

// A request's reply_to is only ever a routing key on the namespace's
// response exchange: naming a queue there sends nothing to that queue.
func TestReplyToCannotRedirectReplies(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, new(Math)))
	ch := brokertest.Channel(t)
	victim, err := ch.QueueDeclare("", false, true, true, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.Publish("rpc_"+ns+"_request", "", false, false, amqp.Publishing{
		Type: "Math.SumNumbers", ReplyTo: victim.Name, CorrelationId: "x", MessageId: "x",
		ContentType: "application/json", Body: []byte("[1,2]"),
	}))
	require.Eventually(t, func() bool { return brokertest.Messages(t, "rpc_"+ns+"_request") == 0 }, 5*time.Second, 20*time.Millisecond,
		"the request was served")
	q, err := ch.QueueDeclarePassive(victim.Name, false, true, true, false, nil) // exclusive: only this connection may look
	require.NoError(t, err)
	assert.Equal(t, 0, q.Messages, "no reply reached the queue named in reply_to")
}
