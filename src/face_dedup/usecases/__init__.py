"""The use cases, one module each, written against the ports only: `enrollment` (and
`enrollment_writes`), `matching` (1:1 and 1:N queries), `review` (over the pure state machine in
`case_rules`), `erasure` (and reconcile). `registry.Registry` is what they share: one tenant's
ports, its `ServiceConfig` and the decision policy. None imports settings, cv2 or boto3
(tests/unit/test_architecture_page.py); `service.DedupService` is the facade callers use."""
