"""gRPC adapters: servicers for the public services, the call interceptor and the status table."""
