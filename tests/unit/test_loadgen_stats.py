import math

from llmcanary_dev.loadgen.stats import RequestResult, percentile, summarize


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert math.isclose(percentile(values, 95), 3.85)
    assert math.isnan(percentile([], 50))


def test_a_streamed_request_gives_ttft_tpot_and_latency() -> None:
    # Sent at 10.0, first token at 10.2, 5 tokens, done at 10.6.
    r = RequestResult(started=10.0, finished=10.6, first_token=10.2, tokens=5, status=200)
    assert math.isclose(r.ttft or 0, 0.2)
    assert math.isclose(r.tpot or 0, 0.1)  # 4 gaps in 0.4 s
    assert math.isclose(r.latency, 0.6)
    one_token = RequestResult(10.0, 10.1, 10.1, 1, 200)
    assert one_token.tpot is None


def test_summary_counts_errors_by_kind_and_leaves_them_out_of_latencies() -> None:
    ok = [RequestResult(float(i), i + 0.5, i + 0.1, 5, 200) for i in range(10)]
    full_queue = RequestResult(0.0, 0.01, None, 0, 503, "queue full")
    refused = RequestResult(0.0, 0.001, None, 0, None, "ClientConnectorError: refused")
    summary = summarize([*ok, full_queue, full_queue, refused], duration_s=5.0)
    assert summary.requests == 13 and summary.succeeded == 10
    assert summary.errors == {"ClientConnectorError: refused": 1, "http 503": 2}
    assert summary.requests_per_s == 2.0
    assert summary.output_tokens == 50 and summary.output_tokens_per_s == 10.0
    assert math.isclose(summary.latency_ms.p95, 500.0)
    assert math.isclose(summary.ttft_ms.p50, 100.0)
    assert math.isclose(summary.tpot_ms.mean, 100.0)


def test_an_empty_run_summarises_without_dividing_by_zero() -> None:
    summary = summarize([], duration_s=0.0)
    assert summary.requests == 0
    assert math.isnan(summary.requests_per_s)
    assert math.isnan(summary.latency_ms.p50)
