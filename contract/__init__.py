"""The wire contract: what the edge (web/) and the worker (handlers/) both speak.

The RPC catalogue, the HTTP route table, header names and limits, the wire models of
requests, replies and events, and the transport errors. Both sides import this package;
it imports neither of them, nor storage/ or warden/: only domain/ (for the business rules a
wire model checks), pydantic and orjson. Plain values, models and pure functions: no I/O.
"""
