import json
from pathlib import Path

from llmcanary_dev.localstack.proxy import Backend, Route, count_requests, render_config


def route(canary: int, *, canary_endpoints: tuple[str, ...] = ("127.244.0.9:8000",)) -> Route:
    return Route(
        "demo",
        "tiny-llm",
        (
            Backend("tiny-llm-stable", 100 - canary, ("127.244.0.2:8000", "127.244.0.3:8000")),
            Backend("tiny-llm-canary", canary, canary_endpoints),
        ),
    )


def test_weights_become_split_clients_shares_over_the_backend_upstreams(tmp_path: Path) -> None:
    conf = render_config([route(15)], listen="127.0.0.1:18080", work_dir=tmp_path)
    assert "85.00% tiny-llm-stable.demo;" in conf
    assert "* tiny-llm-canary.demo;" in conf  # the last takes the remainder: no request lost
    assert "upstream tiny-llm-stable.demo {" in conf
    assert "server 127.244.0.2:8000;" in conf and "server 127.244.0.9:8000;" in conf
    assert "location /demo/tiny-llm/ {" in conf
    assert "location / {" in conf  # the only route is also served at /
    assert "proxy_buffering off;" in conf  # tokens stream through


def test_a_zero_weight_backend_gets_no_share(tmp_path: Path) -> None:
    conf = render_config([route(0)], listen="127.0.0.1:18080", work_dir=tmp_path)
    assert "* tiny-llm-stable.demo;" in conf
    assert "% tiny-llm-canary.demo" not in conf and "* tiny-llm-canary.demo" not in conf


def test_a_backend_without_ready_pods_answers_503_instead_of_vanishing(tmp_path: Path) -> None:
    conf = render_config([route(5, canary_endpoints=())], listen="127.0.0.1:1", work_dir=tmp_path)
    upstream = conf.split("upstream tiny-llm-canary.demo {")[1].split("}")[0]
    assert f"server unix:{tmp_path / 'unavailable.sock'};" in upstream
    assert "return 503" in conf


def test_with_several_routes_each_keeps_its_prefix_only(tmp_path: Path) -> None:
    other = Route("prod", "big-llm", (Backend("big-llm-stable", 100, ("127.244.1.1:8000",)),))
    conf = render_config([route(5), other], listen="127.0.0.1:1", work_dir=tmp_path)
    assert "location /prod/big-llm/ {" in conf and "location / {" not in conf


def test_requests_are_counted_per_route_and_backend_from_the_access_log(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    lines = [
        {"time": 100.0, "route": "demo/tiny-llm", "backend": "tiny-llm-stable.demo", "status": 200},
        {"time": 101.0, "route": "demo/tiny-llm", "backend": "tiny-llm-canary.demo", "status": 200},
        {"time": 102.0, "route": "demo/tiny-llm", "backend": "tiny-llm-stable.demo", "status": 503},
        {"time": 103.0, "route": "", "backend": "", "status": 404},
    ]
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    counts = count_requests(log, since=100.5)
    assert counts == {
        ("demo/tiny-llm", "tiny-llm-canary"): 1,
        ("demo/tiny-llm", "tiny-llm-stable"): 1,
    }
