package tracing;

import io.opentelemetry.api.trace.Tracer;
import io.opentelemetry.sdk.extension.trace.jaeger.sampler.JaegerRemoteSampler;
import io.opentelemetry.sdk.trace.SdkTracerProvider;
import io.opentelemetry.sdk.trace.samplers.Sampler;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A client of the gRPC remote sampling service, as a Java service runs one: the OpenTelemetry SDK with the
 * Jaeger remote sampler polling {@code jaeger.api_v2.SamplingManager/GetSamplingStrategy}. Once the sampler
 * holds the server's strategy (its first answer replaces the always-off initial sampler), it prints as JSON
 * lines the strategy it holds (read from its description: the only public view of it, probabilities to six
 * decimals) and, for each operation named, how many of {@code spans} root spans it sampled.
 *
 * <pre>JaegerRemoteClient http://127.0.0.1:14250 shop 500 60 20000 "GET /busy" "GET /rare"</pre>
 *
 * Exits 2 when no strategy came within {@code timeoutS} seconds.
 */
public final class JaegerRemoteClient {
  private static final Pattern DEFAULT =
      Pattern.compile("PerOperationSampler\\{default=TraceIdRatioBased\\{([0-9.]+)\\}");
  // An operation name with '=' in it would not parse; the test's have none.
  private static final Pattern OPERATION =
      Pattern.compile("(?:\\{|, )([^=]+?)=TraceIdRatioBased\\{([0-9.]+)\\}");

  private JaegerRemoteClient() {}

  public static void main(String[] args) throws InterruptedException {
    String endpoint = args[0];
    String service = args[1];
    int pollMs = Integer.parseInt(args[2]);
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[3]));
    int spans = Integer.parseInt(args[4]);
    Sampler initial = Sampler.alwaysOff();
    JaegerRemoteSampler sampler =
        JaegerRemoteSampler.builder()
            .setEndpoint(endpoint)
            .setServiceName(service)
            .setPollingInterval(pollMs, TimeUnit.MILLISECONDS)
            .setInitialSampler(initial)
            .build();
    String waiting = "JaegerRemoteSampler{sampler=" + initial.getDescription() + ",";
    while (sampler.getDescription().startsWith(waiting)) {
      if (System.nanoTime() > deadline) {
        System.err.println("no strategy within " + args[3] + " s: " + sampler.getDescription());
        System.exit(2);
      }
      Thread.sleep(20);
    }
    System.out.println(strategy(sampler.getDescription()));
    SdkTracerProvider provider = SdkTracerProvider.builder().setSampler(sampler).build();
    Tracer tracer = provider.get("jaeger-remote-java");
    for (int i = 5; i < args.length; i++) {
      int sampled = 0;
      for (int n = 0; n < spans; n++) {
        var span = tracer.spanBuilder(args[i]).startSpan();
        sampled += span.getSpanContext().isSampled() ? 1 : 0;
        span.end();
      }
      System.out.println(
          "{\"kind\":\"decisions\",\"operation\":" + quote(args[i])
              + ",\"spans\":" + spans + ",\"sampled\":" + sampled + "}");
    }
    provider.shutdown().join(10, TimeUnit.SECONDS);
    sampler.shutdown().join(10, TimeUnit.SECONDS);
    System.exit(0);
  }

  /** The strategy line: the default probability, each operation's, and the description they come from. */
  private static String strategy(String description) {
    Matcher fallback = DEFAULT.matcher(description);
    String defaultProbability = fallback.find() ? fallback.group(1) : "null";
    int at = description.indexOf("perOperation=");
    List<String> operations = new ArrayList<>();
    if (at >= 0) {
      Matcher operation = OPERATION.matcher(description.substring(at + "perOperation=".length()));
      while (operation.find()) {
        operations.add(quote(operation.group(1)) + ":" + operation.group(2));
      }
    }
    return "{\"kind\":\"strategy\",\"default\":" + defaultProbability
        + ",\"operations\":{" + String.join(",", operations) + "}"
        + ",\"description\":" + quote(description) + "}";
  }

  /** {@code text} as a JSON string. */
  private static String quote(String text) {
    StringBuilder out = new StringBuilder("\"");
    for (char c : text.toCharArray()) {
      if (c == '"' || c == '\\') {
        out.append('\\').append(c);
      } else if (c < 0x20) {
        out.append(String.format("\\u%04x", (int) c));
      } else {
        out.append(c);
      }
    }
    return out.append('"').toString();
  }
}
