"""Teach moto's CloudFormation the four resource types of our template it does not implement.

moto 5 deploys most of the stack (KMS, Kinesis, DynamoDB, SQS, IAM, Lambda, event source mapping, logs)
but skips AWS::SecretsManager::Secret, AWS::CloudWatch::Alarm, AWS::CloudWatch::Dashboard and
AWS::SQS::QueuePolicy, and then fails on the first Ref/GetAtt to one of them. The models below create those
resources in moto's own Secrets Manager, CloudWatch and SQS backends, so the deployed stack is complete and
every reference in the template is really resolved. Only for tests: the server runs in this process.
"""

from __future__ import annotations

import json
from typing import Any

from moto.cloudformation import parsing
from moto.cloudwatch.models import cloudwatch_backends
from moto.core.common_models import CloudFormationModel
from moto.secretsmanager.models import secretsmanager_backends
from moto.sqs.models import sqs_backends


class _Model:
    """Common plumbing: the physical id is what `Ref` returns. (moto lists only direct subclasses of
    CloudFormationModel, so each model below inherits from it itself.)"""

    def __init__(self, physical_id: str, attributes: dict[str, str] | None = None) -> None:
        self._physical_id = physical_id
        self._attributes = attributes or {}

    @property
    def physical_resource_id(self) -> str:
        return self._physical_id

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return False

    def get_cfn_attribute(self, attribute_name: str) -> str:
        return self._attributes[attribute_name]

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @classmethod
    def update_from_cloudformation_json(cls, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise NotImplementedError("stack updates are not exercised by these tests")


class SecretModel(_Model, CloudFormationModel):
    @staticmethod
    def cloudformation_name_type() -> str:
        return "Name"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SecretsManager::Secret"

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[override]
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str, **_: Any
    ) -> SecretModel:
        props = cloudformation_json["Properties"]
        backend = secretsmanager_backends[account_id][region_name]
        created = backend.create_secret(
            name=props.get("Name", resource_name),
            secret_string=props.get("SecretString"),
            secret_binary=None,
            description=props.get("Description"),
            tags=props.get("Tags"),
            kms_key_id=props.get("KmsKeyId"),
            client_request_token=None,
            replica_regions=[],
            force_overwrite=False,
        )
        info = json.loads(created) if isinstance(created, str) else created
        return cls(info["ARN"])

    @classmethod
    def delete_from_cloudformation_json(  # type: ignore[override]
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        backend = secretsmanager_backends[account_id][region_name]
        backend.delete_secret(resource_name, recovery_window_in_days=None, force_delete_without_recovery=True)


class AlarmModel(_Model, CloudFormationModel):
    @staticmethod
    def cloudformation_name_type() -> str:
        return "AlarmName"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::CloudWatch::Alarm"

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr == "Arn"

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[override]
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str, **_: Any
    ) -> AlarmModel:
        props = cloudformation_json["Properties"]
        name = props.get("AlarmName", resource_name)
        alarm = cloudwatch_backends[account_id][region_name].put_metric_alarm(
            name=name,
            namespace=props.get("Namespace"),
            metric_name=props.get("MetricName"),
            comparison_operator=props["ComparisonOperator"],
            evaluation_periods=int(props["EvaluationPeriods"]),
            period=int(props.get("Period", 60)),
            threshold=float(props["Threshold"]),
            statistic=props.get("Statistic"),
            description=props.get("AlarmDescription", ""),
            dimensions=props.get("Dimensions", []),
            alarm_actions=props.get("AlarmActions", []),
            treat_missing_data=props.get("TreatMissingData"),
        )
        return cls(name, {"Arn": alarm.alarm_arn})

    @classmethod
    def delete_from_cloudformation_json(  # type: ignore[override]
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        cloudwatch_backends[account_id][region_name].delete_alarms([resource_name])


class DashboardModel(_Model, CloudFormationModel):
    @staticmethod
    def cloudformation_name_type() -> str:
        return "DashboardName"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::CloudWatch::Dashboard"

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[override]
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str, **_: Any
    ) -> DashboardModel:
        props = cloudformation_json["Properties"]
        name = props.get("DashboardName", resource_name)
        cloudwatch_backends[account_id][region_name].put_dashboard(name, props["DashboardBody"])
        return cls(name)

    @classmethod
    def delete_from_cloudformation_json(  # type: ignore[override]
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        cloudwatch_backends[account_id][region_name].delete_dashboards([resource_name])


class QueuePolicyModel(_Model, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SQS::QueuePolicy"

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[override]
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str, **_: Any
    ) -> QueuePolicyModel:
        props = cloudformation_json["Properties"]
        backend = sqs_backends[account_id][region_name]
        for queue_url in props["Queues"]:
            backend.set_queue_attributes(
                queue_url.rstrip("/").rsplit("/", 1)[-1], {"Policy": json.dumps(props["PolicyDocument"])}
            )
        return cls(resource_name)

    @classmethod
    def delete_from_cloudformation_json(  # type: ignore[override]
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        return None


def install() -> None:
    """Make moto's CloudFormation see the models above (its model map is cached on first use)."""
    parsing.get_model_list.cache_clear()
    parsing.get_model_map.cache_clear()
    parsing.get_name_type_map.cache_clear()
    missing = {m.cloudformation_type() for m in (SecretModel, AlarmModel, DashboardModel, QueuePolicyModel)}
    assert missing <= set(parsing.get_model_map()), "moto did not pick up the test models"
