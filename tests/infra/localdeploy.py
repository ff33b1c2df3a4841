"""Deploy a synthesized template into a local CloudFormation endpoint (moto's server), as `cdk deploy` would.

`cdk deploy` first publishes the assets listed in `<stack>.assets.json` (zipping directory assets) into the
bootstrap bucket, then creates the stack. Here the bucket is created in moto's S3 and filled the same way,
so the Lambda function's `Code.S3Bucket/S3Key` point at a real object. The template must come from the
`localEndpoint` variant: without the bootstrap-version rule, which reads an SSM parameter only a
bootstrapped account has.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

_PLACEHOLDERS = ("${AWS::AccountId}", "${AWS::Region}", "${AWS::Partition}")


def _zip_directory(root: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(root).as_posix())
    return buffer.getvalue()


def publish_assets(outdir: Path, manifest: dict[str, Any], s3: Any, *, account: str, region: str) -> list[str]:
    """Upload every file asset of `manifest` to its destination; return the s3://bucket/key written."""
    values = dict(zip(_PLACEHOLDERS, (account, region, "aws"), strict=True))
    written: list[str] = []
    for asset in manifest["files"].values():
        source = outdir / asset["source"]["path"]
        body = _zip_directory(source) if asset["source"].get("packaging") == "zip" else source.read_bytes()
        for destination in asset["destinations"].values():
            bucket = destination["bucketName"]
            for placeholder, value in values.items():
                bucket = bucket.replace(placeholder, value)
            existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            if bucket not in existing:
                config = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
                s3.create_bucket(Bucket=bucket, **config)
            s3.put_object(Bucket=bucket, Key=destination["objectKey"], Body=body)
            written.append(f"s3://{bucket}/{destination['objectKey']}")
    return written


def create_stack(cloudformation: Any, name: str, template: dict[str, Any]) -> dict[str, Any]:
    """Create the stack and return its description; fail with the stack's reason if it did not complete."""
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=json.dumps(template),
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )
    stack: dict[str, Any] = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    return stack
