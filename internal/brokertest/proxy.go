package brokertest

import (
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Proxy is a TCP proxy in front of the broker for network fault tests: it
// can black-hole the link, slow it down, or go away and come back. It is a
// few dozen lines of our own rather than toxiproxy, whose server would put
// prometheus, zerolog, gorilla/mux and protobuf in the module graph of
// every user of amqprpc.
type Proxy struct {
	target string // the broker's host:port
	addr   string // where the proxy listens

	mu sync.Mutex
	// protects everything below
	ln        net.Listener // nil while stopped
	gen       int          // counts listeners: a link accepted before a Stop must not outlive it
	conns     map[net.Conn]bool
	blackhole bool
	latency   time.Duration // added to each chunk, each way
	jitter    time.Duration // up to this much more or less
}

// NewProxy starts a proxy in front of the broker at URL() and returns it
// with the broker URL that goes through it; it stops when t ends.
func NewProxy(t testing.TB) (*Proxy, string) {
	t.Helper()
	Need(t)
	u, err := url.Parse(URL())
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &Proxy{target: u.Host, addr: ln.Addr().String(), conns: make(map[net.Conn]bool)}
	p.serve(ln)
	t.Cleanup(p.Stop)
	u.Host = p.addr
	return p, u.String()
}

// Blackhole makes the link swallow every byte, both ways, while on: the
// connections stay open and nothing gets through, as when a network path
// dies without a reset.
func (p *Proxy) Blackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackhole = on
}

// Latency delays every chunk of data, each way, by d plus or minus up to
// jitter (order kept).
func (p *Proxy) Latency(d, jitter time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency, p.jitter = d, jitter
}

// Stop closes the listener and every connection: the broker is gone, and
// dials are refused until Start.
func (p *Proxy) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// Start listens again, on the same address, after Stop.
func (p *Proxy) Start() error {
	var err error
	for range 50 { // the port may linger for a moment
		var ln net.Listener
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			p.serve(ln)
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.gen++
	gen := p.gen
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.link(c, gen)
		}
	}()
}

// link carries one client connection, accepted by listener gen, to the
// broker and back.
func (p *Proxy) link(client net.Conn, gen int) {
	broker, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = client.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil || p.gen != gen { // stopped meanwhile
		p.mu.Unlock()
		_ = client.Close()
		_ = broker.Close()
		return
	}
	p.conns[client], p.conns[broker] = true, true
	p.mu.Unlock()
	go p.pipe(broker, client)
	p.pipe(client, broker)
	p.mu.Lock()
	delete(p.conns, client)
	delete(p.conns, broker)
	p.mu.Unlock()
}

// chunk is data read at a moment, to be written after a delay.
type chunk struct {
	data []byte
	due  time.Time
}

// pipe copies from src to dst, through the faults set now, until src
// ends; the writer closes dst once it has written what was read.
func (p *Proxy) pipe(src, dst net.Conn) {
	out := make(chan chunk, 1024)
	go func() { // the writer: keeps the order, waits out each delay
		defer func() { _ = dst.Close() }()
		for c := range out {
			time.Sleep(time.Until(c.due))
			if _, err := dst.Write(c.data); err != nil {
				for range out { // drain: the reader ends too
				}
				return
			}
		}
	}()
	defer close(out)
	defer func() { _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			hole, delay := p.blackhole, p.latency
			if p.jitter > 0 {
				delay += time.Duration(rand.Int64N(int64(2*p.jitter))) - p.jitter
			}
			p.mu.Unlock()
			if !hole {
				out <- chunk{data: append([]byte(nil), buf[:n]...), due: time.Now().Add(delay)}
			}
		}
		if err != nil { // EOF, or closed by Stop or the other pipe's writer
			return
		}
	}
}
