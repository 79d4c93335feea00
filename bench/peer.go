package bench

import (
	"context"
	"time"

	peer "github.com/0x4b53/amqp-rpc/v5"
	amqp "github.com/rabbitmq/amqp091-go"
)

// peerContender is the peer a Go user would pick instead of amqprpc:
// 0x4b53/amqp-rpc v5 with its default settings, a DirectBinding whose
// handler writes the body back and Client.Send with the call's context.
type peerContender struct {
	server   *peer.Server
	client   *peer.Client
	url, key string
	done     chan struct{}
}

func startPeer(url string) (Contender, error) {
	p := &peerContender{url: url, key: randomName("bench_peer_"), done: make(chan struct{})}
	p.server = peer.NewServer(url)
	p.server.Bind(peer.DirectBinding(p.key, func(_ context.Context, rw *peer.ResponseWriter, d amqp.Delivery) {
		_, _ = rw.Write(d.Body)
	}))
	go func() { p.server.ListenAndServe(); close(p.done) }()
	p.client = peer.NewClient(url).WithTimeout(30 * time.Second)
	// Wait until the server consumes: the first calls would find no queue.
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := p.Call(ctx, []byte("x"))
		cancel()
		if err == nil {
			return p, nil
		}
		if i > 30 {
			return nil, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *peerContender) Call(ctx context.Context, body []byte) ([]byte, error) {
	d, err := p.client.Send(peer.NewRequest().WithRoutingKey(p.key).WithBody(string(body)).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	return d.Body, nil
}

// Close stops the client and the server and deletes the request queue,
// which the peer declares durable and leaves behind.
func (p *peerContender) Close() error {
	p.client.Stop()
	p.server.Stop()
	<-p.done
	return onBroker(p.url, func(ch *amqp.Channel) error {
		_, err := ch.QueueDelete(p.key, false, false, false)
		return err
	})
}
