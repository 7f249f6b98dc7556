"""``make bench``: the service against a floor, measured side by side in one run; ``make cost``: the AWS bill.

    python -m tests.harness.bench [--rounds 5] [--json out.json]     # the tables (see __main__)
    python -m tests.harness.bench.cost [--from out.json] [--memory 512]

Layout: ``options`` (what a run measures), ``moto_process`` (AWS: a moto server in its own process),
``backends`` (its resources from template.yaml, and the fake Stripe with a fixed latency, in the parent),
``child`` (a Lambda instance in a process of its own: cold, or warm and driven by commands), ``floor``
(the same DynamoDB and Stripe calls made directly with boto3 and stripe), ``measure`` (the runs),
``report`` (the tables), ``cost`` (the price model).

Kept free of imports: every cold child imports this package before it starts its clock's work.
"""
