// A client of the remote sampling endpoint, as a Go service runs one: the OpenTelemetry SDK with the
// jaegerremote sampler (parent-based) polling the query API, offering operations at fixed rates (traces
// per second). Every sampled span is printed to stdout as one line of the native span JSON; the test reads
// the lines and publishes them to the pipeline.
//
//	client -url http://127.0.0.1:3000/api/sampling -service shop -refresh 1s -duration 40s rare=1 busy=300
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/samplers/jaegerremote"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// lineExporter writes each span as one native span JSON line.
type lineExporter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (e *lineExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range spans {
		tags := map[string]any{}
		for _, kv := range s.Attributes() {
			tags[string(kv.Key)] = kv.Value.AsInterface()
		}
		line := map[string]any{
			"type":          "span",
			"traceId":       s.SpanContext().TraceID().String(),
			"spanId":        s.SpanContext().SpanID().String(),
			"serviceName":   serviceName,
			"operationName": s.Name(),
			"startTimeUs":   s.StartTime().UnixMicro(),
			"durationUs":    s.EndTime().Sub(s.StartTime()).Microseconds(),
			"kind":          "server",
			"tags":          tags,
		}
		if err := e.enc.Encode(line); err != nil {
			return err
		}
	}
	return nil
}

func (*lineExporter) Shutdown(context.Context) error { return nil }

var serviceName string

type offer struct {
	operation string
	rate      float64
}

func parseOffers(args []string) ([]offer, error) {
	offers := make([]offer, 0, len(args))
	for _, arg := range args {
		name, rate, ok := strings.Cut(arg, "=")
		value, err := strconv.ParseFloat(rate, 64)
		if !ok || err != nil || value <= 0 {
			return nil, fmt.Errorf("expected operation=traces-per-second, got %q", arg)
		}
		offers = append(offers, offer{name, value})
	}
	return offers, nil
}

// run starts each operation's root spans at its rate until the duration has passed.
func run(tracer trace.Tracer, offers []offer, duration time.Duration) {
	started := make([]int, len(offers))
	begin := time.Now()
	ticker := time.NewTicker(5 * time.Millisecond)
	defer ticker.Stop()
	for now := range ticker.C {
		elapsed := now.Sub(begin)
		if elapsed > duration {
			return
		}
		for i, o := range offers {
			for due := int(o.rate * elapsed.Seconds()); started[i] < due; started[i]++ {
				_, span := tracer.Start(context.Background(), o.operation, trace.WithSpanKind(trace.SpanKindServer),
					trace.WithTimestamp(now))
				span.End(trace.WithTimestamp(now.Add(time.Millisecond)))
			}
		}
	}
}

func main() {
	url := flag.String("url", "http://127.0.0.1:3000/api/sampling", "the sampling endpoint")
	flag.StringVar(&serviceName, "service", "shop", "the service name")
	refresh := flag.Duration("refresh", time.Second, "how often the sampler polls")
	duration := flag.Duration("duration", 30*time.Second, "how long to offer traffic")
	flag.Parse()
	offers, err := parseOffers(flag.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	sampler := jaegerremote.New(serviceName,
		jaegerremote.WithSamplingServerURL(*url),
		jaegerremote.WithSamplingRefreshInterval(*refresh),
	)
	exporter := &lineExporter{enc: json.NewEncoder(os.Stdout)}
	provider := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.ParentBased(sampler)),
		sdktrace.WithSyncer(exporter),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(serviceName), attribute.String("client", "go"))),
	)
	run(provider.Tracer("remote-sampling-client"), offers, *duration)
	sampler.Close()
	_ = provider.Shutdown(context.Background())
}
