# Quick start: `make demo` and `make test` create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# lint what exists: a fresh clone has no folder that holds no tracked file
LINT_PATHS := $(wildcard src tests benchmarks docs/_ext)

.PHONY: demo explain test lint unit docs dist translations venv bench bench-variants bench-linear bench-tokens bench-distill bench-triton bench-distributed bench-report explore-figure clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the CPU build of torch on disk first, so nothing pulls the CUDA wheels
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# `make explain` needs the package alone (numpy, typer, rich): its own light venv, no torch
EXPLAIN_VENV := .venv-explain
EXPLAIN_STAMP := $(EXPLAIN_VENV)/.installed

$(EXPLAIN_STAMP): pyproject.toml
	test -x $(EXPLAIN_VENV)/bin/python || $(PYTHON) -m venv $(EXPLAIN_VENV)
	$(EXPLAIN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(EXPLAIN_VENV)/bin/python -m pip install --quiet -e .
	touch $(EXPLAIN_STAMP)

# cross entropy vs MSE, trained on real data; prints where the report is
demo: $(STAMP)
	$(BIN)/crossentropy demo

# the worked walk through the theory, step by step with the numbers
explain: $(EXPLAIN_STAMP)
	$(EXPLAIN_VENV)/bin/crossentropy explain

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest

test: lint unit

# the documentation site (docs/, mkdocs.yml) into site/; strict: a broken link, a missing page
# or an API reference that does not resolve fails the build
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# the gettext catalogues (src/crossentropy/locale): for each domain, the messages extracted from
# the code (its <domain>.cfg names the files; `_` and `N_` mark them), each language's .po
# updated (new messages untranslated, gone ones dropped), and compiled to the .mo shipped beside it
LOCALE := src/crossentropy/locale
translations: $(STAMP)
	for domain in explain explore plot; do \
		$(BIN)/pybabel --quiet extract --no-location --sort-output --keyword=N_ \
			--mapping-file=$(LOCALE)/$$domain.cfg --output-file=$(LOCALE)/$$domain.pot \
			--project=crossentropy src/crossentropy || exit 1; \
		for lang in zh ru; do \
			if [ -f $(LOCALE)/$$lang/LC_MESSAGES/$$domain.po ]; then \
				$(BIN)/pybabel --quiet update --no-fuzzy-matching --domain=$$domain \
					--input-file=$(LOCALE)/$$domain.pot --output-dir=$(LOCALE) --locale=$$lang || exit 1; \
			else \
				$(BIN)/pybabel --quiet init --domain=$$domain --input-file=$(LOCALE)/$$domain.pot \
					--output-dir=$(LOCALE) --locale=$$lang || exit 1; \
			fi; \
		done; \
		rm $(LOCALE)/$$domain.pot; \
		$(BIN)/pybabel --quiet compile --domain=$$domain --directory=$(LOCALE) || exit 1; \
	done

# the sdist and the wheel into dist/; the wheel ships the C kernel compiled for this platform
# (AVX-512, AVX2 and portable builds on x86-64), or is pure Python when no C compiler is found;
# auditwheel then gives a platform wheel the manylinux tag its libraries' glibc symbols allow
# (a package index takes no plain linux_* tag), its files unchanged
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	for wheel in dist/*-linux_*.whl; do \
		[ -e "$$wheel" ] || continue; \
		PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/auditwheel repair --wheel-dir dist "$$wheel" && rm "$$wheel"; \
	done

# the fused cross-entropy benchmark: prints the table and writes benchmarks/results/cross_entropy.json
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_cross_entropy.py

# the fused kernel's builds (AVX-512, AVX2, portable) and no kernel against torch eager:
# writes benchmarks/results/kernel_variants.json (about a minute)
bench-variants: $(STAMP)
	$(BIN)/python benchmarks/bench_kernel_variants.py

# the linear + cross entropy benchmark: writes benchmarks/results/linear_cross_entropy.json (about 17 minutes)
bench-linear: $(STAMP)
	$(BIN)/python benchmarks/bench_linear_cross_entropy.py

# per-token log-probabilities and entropies from hidden states (linear_token_log_probs) against
# the unfused computation (eager, torch.compile) and the matrix products alone:
# writes benchmarks/results/token_log_probs.json
bench-tokens: $(STAMP)
	$(BIN)/python benchmarks/bench_token_log_probs.py

# knowledge distillation from hidden states (linear_distillation_loss) against Liger-Kernel,
# the unfused computation and the matrix products alone, and distillation_loss on logits:
# writes benchmarks/results/distillation.json
bench-distill: $(STAMP)
	$(BIN)/python benchmarks/bench_distillation.py

# the Triton kernels' benchmark, on a CUDA GPU: writes benchmarks/results/triton_gpu.json (exit 2 without one)
bench-triton: $(STAMP)
	$(BIN)/python benchmarks/bench_triton_gpu.py

# the README screenshot of `crossentropy explore`, drawn by the system's chromium
explore-figure: $(STAMP)
	$(BIN)/python tests/browser.py docs/figures/explore.png

# the vocabulary-parallel benchmark: 1, 2 and 4 gloo ranks; writes benchmarks/results/vocab_parallel.json
bench-distributed: $(STAMP)
	$(BIN)/python benchmarks/bench_vocab_parallel.py

# the scoring report on a 10.5 GB token file (logits (80, 1024, 32000) written to /tmp) against
# reading the file, torch and torchmetrics: writes benchmarks/results/report.json (about 3 minutes)
bench-report: $(STAMP)
	$(BIN)/python benchmarks/bench_report.py

clean:
	rm -rf $(VENV) $(EXPLAIN_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis site
