package amqprpc

import (
	"os"
	"testing"

	"github.com/amqprpc/amqprpc/internal/brokertest"
)

func TestMain(m *testing.M) {
	if ns := os.Getenv(childServerEnv); ns != "" {
		runChildServer(ns) // a server process for TestServerKilledMidCall
		return
	}
	brokertest.Main(m)
}

// Short names for the shared integration-test helpers.
var (
	brokerURL     = brokertest.URL
	needBroker    = brokertest.Need
	testNamespace = brokertest.Namespace
	rawChannel    = brokertest.Channel
	queueDepth    = brokertest.QueueDepth
	queueMessages = brokertest.Messages
	consumers     = brokertest.Consumers
	rabbitmqctl   = brokertest.Rabbitmqctl
	serveUntilEnd = brokertest.Serve
	newProxy      = brokertest.NewProxy
)
