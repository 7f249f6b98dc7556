"""stripe-usage-reporter: shared code of the Lambda functions (published as a Lambda layer)."""
