"""Loopback test doubles shared by the test suite (tests/) and the benchmarks (bench/).

`testkit.servers` holds real HTTP servers standing in for every outside service (OpenAI-compatible
chat and images APIs, search providers, web pages, feeds, the Hub); `testkit.report_fixtures` builds a
synthetic warehouse for the report; `testkit.synthesis_fakes` holds in-memory tools and images for
the synthesis code. Every server binds 127.0.0.1 only (ephemeral ports unless given one); nothing
here reaches the internet.

Never shipped: pyproject.toml's setuptools `packages.find.include` names only the product packages,
so testkit stays out of the wheel. Import it from a checkout (the repository root on sys.path, as
pytest and `python -m bench.<name>` from the root both arrange).
"""
