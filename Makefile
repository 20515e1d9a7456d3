# The seed's commands, each one cargo, compose, bench or curl command (README, "Make targets").
# `make help` lists them. Variables: PORT (8084) for `health`, IMAGE for the docker targets.
.DEFAULT_GOAL := help
.PHONY: help quick-start dev test test-integration test-load lint format format-check \
        docker-build docker-run prod logs health

# The tag the Helm chart's default image and compose.yaml use (the crate's version).
IMAGE ?= commerce:0.1.0
PORT ?= 8084

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

quick-start: ## Serve on :8084 with nothing else installed (SQLite, in-process Redis, embedded stubs)
	cargo run --release -- serve

dev: ## Serve a debug build with human-readable logs
	LOG_FORMAT=pretty cargo run -- serve

test: ## Every test: the README's command (real backends with TEST_DATABASE_URL / TEST_REDIS_URL set)
	cargo test --locked

test-integration: ## The integration suites only (the one binary of tests/: api and faults; the example client they run)
	cargo build --locked --example order_events && cargo test --locked --test integration

test-load: ## The load generator: every scenario against a server it starts (BENCHMARKS.md)
	cargo run --release -- bench

lint: ## Clippy, warnings as errors (as CI)
	cargo clippy --all-targets --locked -- -D warnings

format: ## Format the code
	cargo fmt

format-check: ## Check the formatting (as CI)
	cargo fmt --check

docker-build: ## Build the image the Helm chart and compose use
	docker build -t $(IMAGE) .

docker-run: ## Run the image: the embedded demo on :8084
	docker run --rm -p 8084:8084 $(IMAGE)

prod: ## The full local stack: service, stubs, PostgreSQL, Redis, Jaeger, Prometheus, Grafana
	docker compose up --build -d

logs: ## Follow the service's logs in the compose stack
	docker compose logs -f commerce

health: ## Ask a running service for its health (PORT=8084); fails unless it answers 200
	curl -fsS http://localhost:$(PORT)/health
