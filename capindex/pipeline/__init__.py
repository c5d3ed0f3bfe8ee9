"""The ingest pipeline: discover -> decode -> caption -> write (see docs/architecture.md).

Modules are imported where used: `capindex.pipeline.ingest` pulls in torch.
"""
