"""Training: `sso` rows -> six sequences per row -> collator -> log-probs -> SSO loss -> trainer (`ssogen train`)."""
