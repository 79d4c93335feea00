package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/spf13/cobra"

	"github.com/amqprpc/amqprpc/internal/transport"
)

func newStatusCmd(g *globals) *cobra.Command {
	var (
		mgmt   string
		asJSON bool
		watch  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status [flags] [NAMESPACE...]",
		Short: "Show the queues, servers and clients of namespaces",
		Long: `status shows, for each NAMESPACE (all of them when none is named), its request
queue (depth: ready and unacked; consumers: the servers alive; publish and
deliver rates), its extra request queues, a fanout namespace's server queues,
and its clients' reply queues. It reads the RabbitMQ management HTTP API
(--mgmt, by default port 15672 of the first broker URL's host, with its
credentials). When that is not reachable it says so and shows what AMQP alone
can tell: the depth and consumers of each named namespace's request queue.
--watch refreshes it, like top, until Ctrl-C.

` + exitCodesHelp,
		Example: `  amqprpc status
  amqprpc status math --watch 2s
  amqprpc status --json math | jq .`,
		RunE: func(cmd *cobra.Command, namespaces []string) error {
			base, err := managementURL(g.url, mgmt)
			if err != nil {
				return exit(exitUsage, err)
			}
			for {
				report, err := gatherStatus(cmd.Context(), g, base, namespaces)
				if err != nil {
					return err
				}
				if watch > 0 && terminal(g.stdout) {
					fmt.Fprint(g.stdout, "\x1b[H\x1b[2J") // home, clear
				}
				if asJSON {
					if err := printJSON(g.stdout, report, true); err != nil {
						return err
					}
				} else {
					report.print(g.stdout)
				}
				if watch <= 0 {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil // Ctrl-C ends a watch: not a failure
				case <-time.After(watch):
				}
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&mgmt, "mgmt", "", "management API URL, such as http://user:pass@host:15672/ (default: from --url)")
	f.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	f.DurationVar(&watch, "watch", 0, "refresh every this long until Ctrl-C (0: once)")
	return cmd
}

// statusReport is what status prints.
type statusReport struct {
	Source     string            `json:"source"` // "management" or "amqp"
	Note       string            `json:"note,omitempty"`
	Namespaces []namespaceStatus `json:"namespaces"`
}

type namespaceStatus struct {
	Namespace    string        `json:"namespace"`
	RequestQueue *queueStatus  `json:"request_queue"` // nil: none (a fanout namespace)
	ExtraQueues  []queueStatus `json:"extra_queues"`
	FanoutQueues []queueStatus `json:"fanout_server_queues"`
	ReplyQueues  []queueStatus `json:"reply_queues"`
}

type queueStatus struct {
	Name        string   `json:"name"`
	Type        string   `json:"type,omitempty"`
	Ready       int      `json:"ready"`
	Unacked     *int     `json:"unacked,omitempty"` // nil: AMQP cannot tell
	Consumers   int      `json:"consumers"`
	PublishRate *float64 `json:"publish_rate,omitempty"` // messages/s
	DeliverRate *float64 `json:"deliver_rate,omitempty"`
	Client      string   `json:"client,omitempty"` // of a reply queue: the client id
}

// managementURL is mgmt, or the one derived from the first broker URL:
// http(s)://user:pass@host:15672(15671)/, with the URL's vhost kept for the
// API calls in the fragment.
func managementURL(brokerURL, mgmt string) (*url.URL, error) {
	first := strings.TrimSpace(strings.Split(brokerURL, ",")[0])
	bu, err := transport.ParseURI(first) // errors without the password
	if err != nil {
		return nil, fmt.Errorf("--url: %w", err)
	}
	if mgmt != "" {
		u, err := url.Parse(mgmt)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("--mgmt %s: not an http(s) URL", transport.Redact(mgmt))
		}
		if u.User == nil {
			u.User = url.UserPassword(bu.Username, bu.Password)
		}
		u.Fragment = bu.Vhost
		return u, nil
	}
	scheme, port := "http", 15672
	if bu.Scheme == "amqps" {
		scheme, port = "https", 15671
	}
	return &url.URL{Scheme: scheme, User: url.UserPassword(bu.Username, bu.Password),
		Host: fmt.Sprintf("%s:%d", bu.Host, port), Path: "/", Fragment: bu.Vhost}, nil
}

// gatherStatus asks the management API, or else AMQP.
func gatherStatus(ctx context.Context, g *globals, base *url.URL, namespaces []string) (*statusReport, error) {
	queues, exchanges, err := fromManagement(ctx, base)
	if err == nil {
		return classify(queues, exchanges, namespaces), nil
	}
	if ctx.Err() != nil {
		return nil, exit(exitInterrupted, nil)
	}
	shown := *base
	shown.Fragment = "" // the vhost, kept there for the API calls
	note := fmt.Sprintf("the management API is not reachable at %s (%v); showing what AMQP alone tells: request queue depth and consumers", shown.Redacted(), err)
	if len(namespaces) == 0 {
		return nil, exit(exitUsage, errors.New(note+"; name the namespaces: without the management API they cannot be listed"))
	}
	report, err := fromAMQP(g.url, namespaces)
	if err != nil {
		return nil, err
	}
	report.Note = note
	return report, nil
}

// mgmtQueue is a queue as the management API lists it.
type mgmtQueue struct {
	Name         string `json:"name"`
	Type         string `json:"type"`
	Ready        int    `json:"messages_ready"`
	Unacked      int    `json:"messages_unacknowledged"`
	Consumers    int    `json:"consumers"`
	MessageStats struct {
		Publish    *struct{ Rate float64 } `json:"publish_details"`
		DeliverGet *struct{ Rate float64 } `json:"deliver_get_details"`
	} `json:"message_stats"`
}

func fromManagement(ctx context.Context, base *url.URL) ([]mgmtQueue, []string, error) {
	vhost := url.PathEscape(base.Fragment)
	var queues []mgmtQueue
	if err := getJSON(ctx, base, "api/queues/"+vhost, &queues); err != nil {
		return nil, nil, err
	}
	var exchanges []struct {
		Name string `json:"name"`
	}
	if err := getJSON(ctx, base, "api/exchanges/"+vhost, &exchanges); err != nil {
		return nil, nil, err
	}
	names := make([]string, len(exchanges))
	for i, e := range exchanges {
		names[i] = e.Name
	}
	return queues, names, nil
}

func getJSON(ctx context.Context, base *url.URL, path string, v any) error {
	u := *base
	u.Fragment = ""
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// path is escaped already (the vhost "/" is %2F): appended as text.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(u.String(), "/")+"/"+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return ue.Err // its text repeats the URL, password included
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// classify sorts queues into namespaces: those named, or else every
// namespace with a request exchange.
func classify(queues []mgmtQueue, exchanges, namespaces []string) *statusReport {
	// Every namespace there is, for telling rpc_a_b_... of namespace a_b
	// from namespace a's.
	var all []string
	for _, e := range exchanges {
		if ns, ok := strings.CutPrefix(e, "rpc_"); ok {
			if ns, ok = strings.CutSuffix(ns, "_request"); ok && ns != "" {
				all = append(all, ns)
			}
		}
	}
	if len(namespaces) == 0 {
		namespaces = all
	}
	namespaces = slices.Clone(namespaces)
	slices.Sort(namespaces)
	namespaces = slices.Compact(namespaces)
	all = append(all, namespaces...)
	byNS := map[string]*namespaceStatus{}
	report := &statusReport{Source: "management"}
	for _, ns := range namespaces {
		report.Namespaces = append(report.Namespaces, namespaceStatus{Namespace: ns})
	}
	for i := range report.Namespaces {
		byNS[report.Namespaces[i].Namespace] = &report.Namespaces[i]
	}
	for _, q := range queues {
		st := byNS[longestNamespace(q.Name, all)]
		if st == nil {
			continue // another namespace's, or none's
		}
		ns := st.Namespace
		qs := queueStatus{Name: q.Name, Type: q.Type, Ready: q.Ready, Unacked: &q.Unacked, Consumers: q.Consumers}
		if p := q.MessageStats.Publish; p != nil {
			qs.PublishRate = &p.Rate
		}
		if d := q.MessageStats.DeliverGet; d != nil {
			qs.DeliverRate = &d.Rate
		}
		rest := strings.TrimPrefix(q.Name, "rpc_"+ns+"_")
		switch {
		case rest == "request":
			st.RequestQueue = &qs
		case strings.HasPrefix(rest, "queue_"):
			st.ExtraQueues = append(st.ExtraQueues, qs)
		case strings.HasPrefix(rest, "fanout_"):
			st.FanoutQueues = append(st.FanoutQueues, qs)
		case strings.Contains(rest, "_response"):
			qs.Client = rest[:strings.LastIndex(rest, "_response")]
			st.ReplyQueues = append(st.ReplyQueues, qs)
		}
	}
	return report
}

// longestNamespace is the longest of namespaces whose queues' prefix
// rpc_<ns>_ starts name, or "".
func longestNamespace(name string, namespaces []string) string {
	best := ""
	for _, ns := range namespaces {
		if strings.HasPrefix(name, "rpc_"+ns+"_") && len(ns) > len(best) {
			best = ns
		}
	}
	return best
}

// fromAMQP gives each namespace's request queue depth and consumers, from
// passive declares.
func fromAMQP(brokerURL string, namespaces []string) (*statusReport, error) {
	first := strings.TrimSpace(strings.Split(brokerURL, ",")[0])
	if _, err := transport.ParseURI(first); err != nil { // amqp.Dial's would quote the password
		return nil, fmt.Errorf("--url: %w", err)
	}
	conn, err := amqp.Dial(first)
	if err != nil {
		return nil, exit(exitUnreachable, fmt.Errorf("connecting to %s: %w", redact(first), err))
	}
	defer conn.Close()
	report := &statusReport{Source: "amqp"}
	for _, ns := range namespaces {
		st := namespaceStatus{Namespace: ns}
		ch, err := conn.Channel()
		if err != nil {
			return nil, exit(exitUnreachable, err)
		}
		name := "rpc_" + ns + "_request"
		if q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil); err == nil {
			st.RequestQueue = &queueStatus{Name: name, Ready: q.Messages, Consumers: q.Consumers}
			_ = ch.Close()
		} // else 404: no such queue, and the channel is closed
		report.Namespaces = append(report.Namespaces, st)
	}
	return report, nil
}

func (r *statusReport) print(w io.Writer) {
	if r.Note != "" {
		fmt.Fprintln(w, paint(w, red, "note: "+r.Note))
	}
	if len(r.Namespaces) == 0 {
		fmt.Fprintln(w, "no namespaces")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tQUEUE\tROLE\tTYPE\tREADY\tUNACKED\tCONSUMERS\tIN/s\tOUT/s")
	for _, ns := range r.Namespaces {
		row := func(q queueStatus, role string) {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\t%s\n", ns.Namespace, q.Name, role, dash(q.Type),
				q.Ready, intOrDash(q.Unacked), q.Consumers, rateOrDash(q.PublishRate), rateOrDash(q.DeliverRate))
		}
		if ns.RequestQueue != nil {
			row(*ns.RequestQueue, "requests")
		} else {
			fmt.Fprintf(tw, "%s\t(no request queue)\t\t\t\t\t\t\t\n", ns.Namespace)
		}
		for _, q := range ns.ExtraQueues {
			row(q, "requests (extra)")
		}
		for _, q := range ns.FanoutQueues {
			row(q, "fanout server")
		}
		for _, q := range ns.ReplyQueues {
			row(q, "replies of "+q.Client)
		}
	}
	_ = tw.Flush()
	for _, ns := range r.Namespaces {
		if ns.RequestQueue == nil && r.Source != "management" {
			fmt.Fprintf(w, "%s: no request queue (a fanout namespace's servers, or none: without the management API they cannot be counted)\n", ns.Namespace)
			continue
		}
		servers := len(ns.FanoutQueues)
		if ns.RequestQueue != nil {
			servers = ns.RequestQueue.Consumers
		}
		clients := 0
		for _, q := range ns.ReplyQueues {
			if q.Consumers > 0 {
				clients++
			}
		}
		line := fmt.Sprintf("%s: %d server(s) consuming", ns.Namespace, servers)
		if r.Source == "management" {
			line += fmt.Sprintf(", %d client(s) connected, %d reply queue(s)", clients, len(ns.ReplyQueues))
		}
		if ns.RequestQueue != nil {
			line += fmt.Sprintf(", %d request(s) waiting", ns.RequestQueue.Ready)
		}
		fmt.Fprintln(w, line)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func intOrDash(n *int) string {
	if n == nil {
		return "-"
	}
	return fmt.Sprint(*n)
}

func rateOrDash(r *float64) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f", *r)
}
