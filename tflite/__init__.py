"""Full-integer TFLite export and deployment checks (LiteRT, Edge TPU rules)."""
