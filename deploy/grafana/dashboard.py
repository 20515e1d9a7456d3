#!/usr/bin/env python3
"""Generates the Grafana dashboard helm/commerce/files/commerce-dashboard.json (shared with
the compose stack through deploy/grafana/dashboards/commerce.json).

Edit the panels here, then run `python3 deploy/grafana/dashboard.py`; scripts/check-deploy.sh
fails when the committed JSON differs from what this prints. Metric names and labels are the
ones src/metrics.rs emits (README "Observability").
"""
import json
import os
import sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../helm/commerce/files/commerce-dashboard.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job="commerce", instance=~"$instance"'
panels = []
pid = [0]
y = [0]

def row(title):
    pid[0] += 1
    panels.append({"type": "row", "title": title, "id": pid[0], "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y[0]}, "panels": []})
    y[0] += 1

def ts(title, targets, x, w=12, h=8, unit="short", desc="", stack=False):
    pid[0] += 1
    p = {
        "type": "timeseries", "title": title, "id": pid[0], "datasource": DS,
        "description": desc,
        "gridPos": {"h": h, "w": w, "x": x, "y": y[0]},
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 10,
                         "stacking": {"mode": "normal" if stack else "none", "group": "A"}}},
                        "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max", "lastNotNull"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [dict(datasource=DS, refId=chr(65 + i), expr=e, legendFormat=l) for i, (e, l) in enumerate(targets)],
    }
    panels.append(p)

def stat(title, expr, x, w=6, h=4, unit="short", desc="", thresholds=None):
    pid[0] += 1
    steps = thresholds or [{"color": "green", "value": None}]
    panels.append({
        "type": "stat", "title": title, "id": pid[0], "datasource": DS, "description": desc,
        "gridPos": {"h": h, "w": w, "x": x, "y": y[0]},
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "background", "graphMode": "area", "textMode": "auto"},
        "targets": [{"datasource": DS, "refId": "A", "expr": expr, "legendFormat": title}],
    })

def nl(h=8):
    y[0] += h

R = "$__rate_interval"
red = lambda v: [{"color": "green", "value": None}, {"color": "red", "value": v}]
amber = lambda a, r: [{"color": "green", "value": None}, {"color": "orange", "value": a}, {"color": "red", "value": r}]

row("Overview")
stat("Instances up", f'sum(up{{{SEL}}})', 0, desc="Scraped commerce replicas that answer /metrics.",
     thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}])
stat("gRPC requests/s", f'sum(rate(grpc_server_requests_total{{{SEL}}}[{R}]))', 6, unit="reqps")
stat("Sagas waiting for an operator", f'sum(max by (status) (sagas{{{SEL}, status=~"FAILED|COMPENSATION_FAILED"}}))', 12,
     desc="FAILED (retries exhausted) and COMPENSATION_FAILED sagas: act with SagaAdmin.", thresholds=red(1))
stat("Relay lag", f'max(relay_lag_events{{{SEL}}})', 18, desc="Settled events not yet published to Redis Streams (head position minus the relay cursor).",
     thresholds=amber(100, 1000))
nl(4)

row("gRPC")
ts("Requests per RPC", [(f'sum by (service, method) (rate(grpc_server_requests_total{{{SEL}}}[{R}]))', "{{service}}/{{method}}")], 0, unit="reqps")
ts("Non-OK responses by code", [(f'sum by (method, code) (rate(grpc_server_requests_total{{{SEL}, code!="OK"}}[{R}]))', "{{method}} {{code}}")], 12, unit="reqps")
nl()
ts("Latency p50 per RPC", [(f'histogram_quantile(0.5, sum by (le, service, method) (rate(grpc_server_request_duration_seconds_bucket{{{SEL}}}[{R}])))', "{{service}}/{{method}}")], 0, unit="s")
ts("Latency p99 per RPC", [(f'histogram_quantile(0.99, sum by (le, service, method) (rate(grpc_server_request_duration_seconds_bucket{{{SEL}}}[{R}])))', "{{service}}/{{method}}")], 12, unit="s")
nl()

row("REST shim (HTTP)")
ts("HTTP requests by route", [(f'sum by (method, route, status) (rate(http_requests_total{{{SEL}}}[{R}]))', "{{method}} {{route}} {{status}}")], 0, unit="reqps")
ts("HTTP latency p99 by route", [
    (f'histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{{{SEL}}}[{R}])))', "{{route}}")], 12, unit="s")
nl()

row("Carts")
ts("Cart operations", [(f'sum by (operation) (rate(cart_operations_total{{{SEL}}}[{R}]))', "{{operation}}"),
    (f'sum by (operation, outcome) (rate(cart_operations_total{{{SEL}, outcome!="ok"}}[{R}]))', "{{operation}} {{outcome}}")], 0, w=8, unit="ops")
ts("Carts created / converted / abandoned", [
    (f'sum(increase(carts_created_total{{{SEL}}}[1h]))', "created /h"),
    (f'sum(increase(carts_converted_total{{{SEL}}}[1h]))', "converted /h"),
    (f'sum(increase(carts_abandoned_total{{{SEL}}}[1h]))', "abandoned /h")], 8, w=8)
ts("Abandonment rate", [(f'sum(increase(carts_abandoned_total{{{SEL}}}[6h])) / clamp_min(sum(increase(carts_created_total{{{SEL}}}[6h])), 1)', "abandoned / created (6h)")],
   16, w=8, unit="percentunit")
nl()

row("Orders and sagas")
ts("Order status transitions", [(f'sum by (to) (rate(orders_status_transitions_total{{{SEL}}}[{R}]))', "{{to}}")], 0, w=8, unit="ops", stack=True)
ts("Saga steps by outcome", [(f'sum by (step, outcome) (rate(saga_steps_total{{{SEL}}}[{R}]))', "{{step}} {{outcome}}")], 8, w=8, unit="ops")
ts("Sagas by status", [(f'max by (status) (sagas{{{SEL}}})', "{{status}}")], 16, w=8)
nl()
ts("Saga step duration p50", [(f'histogram_quantile(0.5, sum by (le, step) (rate(saga_step_duration_seconds_bucket{{{SEL}}}[{R}])))', "{{step}}")], 0, unit="s")
ts("Saga step duration p99", [(f'histogram_quantile(0.99, sum by (le, step) (rate(saga_step_duration_seconds_bucket{{{SEL}}}[{R}])))', "{{step}}")], 12, unit="s")
nl()
ts("Saga end to end p50 / p99", [
    (f'histogram_quantile(0.5, sum by (le, outcome) (rate(saga_duration_seconds_bucket{{{SEL}}}[{R}])))', "p50 {{outcome}}"),
    (f'histogram_quantile(0.99, sum by (le, outcome) (rate(saga_duration_seconds_bucket{{{SEL}}}[{R}])))', "p99 {{outcome}}")], 0, unit="s")
ts("Saga retries by step", [(f'sum by (step) (rate(saga_retries_total{{{SEL}}}[{R}]))', "{{step}}")], 12, unit="ops",
   desc="Retries after a transient error (UNAVAILABLE, DEADLINE_EXCEEDED) from a sibling service.")
nl()

row("Event store, relay, projections")
ts("Event store append latency", [
    (f'histogram_quantile(0.5, sum by (le) (rate(event_store_append_duration_seconds_bucket{{{SEL}}}[{R}])))', "p50"),
    (f'histogram_quantile(0.99, sum by (le) (rate(event_store_append_duration_seconds_bucket{{{SEL}}}[{R}])))', "p99")], 0, w=8, unit="s")
ts("Optimistic concurrency conflicts", [(f'sum(rate(event_store_conflicts_total{{{SEL}}}[{R}]))', "conflicts/s")], 8, w=8, unit="ops",
   desc="Appends refused because the aggregate moved on (ABORTED to the caller, never a lost update).")
ts("Relay lag and projection lag", [
    (f'max(relay_lag_events{{{SEL}}})', "relay lag"),
    (f'max by (projection) (projection_lag_events{{{SEL}}})', "lag {{projection}}")], 16, w=8)
nl()
row("Connection pools")
ts("Database pool", [(f'sum by (state) (db_pool_connections{{{SEL}, state!="max"}})', "{{state}}"),
                     (f'sum(db_pool_connections{{{SEL}, state="max"}})', "max")], 0)
ts("Redis pool", [(f'sum by (state) (redis_pool_connections{{{SEL}, state!="max"}})', "{{state}}"),
                  (f'sum(redis_pool_connections{{{SEL}, state="max"}})', "max")], 12)
nl()

dashboard = {
    "uid": "commerce",
    "title": "Commerce service",
    "description": "Requests per RPC, carts, orders, the fulfillment saga, event store and projections.",
    "tags": ["commerce", "grpc"],
    "editable": True,
    "graphTooltip": 1,
    "schemaVersion": 39,
    "version": 1,
    "refresh": "30s",
    "time": {"from": "now-1h", "to": "now"},
    "timezone": "browser",
    "links": [],
    "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                              "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}]},
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
        {"name": "instance", "label": "Instance", "type": "query", "datasource": DS,
         "query": {"query": 'label_values(up{job="commerce"}, instance)', "refId": "instance"},
         "definition": 'label_values(up{job="commerce"}, instance)',
         "multi": True, "includeAll": True, "allValue": ".*", "current": {}, "refresh": 2, "sort": 1, "hide": 0, "options": [], "regex": ""},
    ]},
    "panels": panels,
}
text = json.dumps(dashboard, indent=2) + "\n"
if "--check" in sys.argv:
    if open(OUT, encoding="utf-8").read() != text:
        sys.exit(f"{OUT} is stale: run python3 deploy/grafana/dashboard.py")
else:
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
