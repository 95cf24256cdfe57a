"""Public AWS prices the cost estimate uses, in one place. us-east-1, on-demand, no free tier.

Sources (the AWS pricing pages, as published in 2025; the 1 Nov 2024 DynamoDB on-demand price cut
is included). Not re-checked from this machine, which has no network: check before relying on them.
  Lambda        https://aws.amazon.com/lambda/pricing/          (Arm: per GB-second, per request)
  API Gateway   https://aws.amazon.com/api-gateway/pricing/     (HTTP APIs, first 300M requests)
  DynamoDB      https://aws.amazon.com/dynamodb/pricing/on-demand/
  KMS           https://aws.amazon.com/kms/pricing/
  S3            https://aws.amazon.com/s3/pricing/              (S3 Standard)
  CloudWatch    https://aws.amazon.com/cloudwatch/pricing/      (log ingestion)
"""

from __future__ import annotations

PRICES_AS_OF = "2025 public price lists (us-east-1)"

LAMBDA_ARM_PER_GB_SECOND = 0.0000133334
LAMBDA_PER_REQUEST = 0.20 / 1_000_000
API_GATEWAY_HTTP_PER_REQUEST = 1.00 / 1_000_000
DYNAMODB_PER_WRITE_REQUEST_UNIT = 0.625 / 1_000_000
DYNAMODB_PER_READ_REQUEST_UNIT = 0.125 / 1_000_000
DYNAMODB_STORAGE_PER_GB_MONTH = 0.25
KMS_KEY_PER_MONTH = 1.00
KMS_PER_REQUEST = 0.03 / 10_000
S3_STANDARD_PER_GB_MONTH = 0.023
S3_PUT_PER_REQUEST = 0.005 / 1_000
S3_GET_PER_REQUEST = 0.0004 / 1_000
CLOUDWATCH_LOGS_PER_GB = 0.50

# The design's own estimate (shared/design, "Monthly Cost Breakdown"): 100K requests, 50K writes,
# 200K reads, 1 GB of S3, 1 GB of logs; it did not price the search's reads by memory count.
DESIGN_MONTHLY_TOTAL = 2.32
DESIGN_LOG_GB = 1.0
DESIGN_S3_GB = 1.0
