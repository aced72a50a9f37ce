"""JSON schemas of the custom resources the manifests use, which Kubernetes' own schemas lack.

Written from KEDA's documented specification (keda.sh/docs/2.15: "ScaledObject specification"
and the "Redis Lists" scaler): strict on unknown fields of the object and of its spec, numeric
fields as integers, trigger metadata as strings (the CRD's `map[string]string`).
"""

from __future__ import annotations

from typing import Any

COUNT = {"type": "integer", "minimum": 0}
SECONDS = {"type": "integer", "minimum": 1}
INTEGER_STRING = {"type": "string", "pattern": "^[0-9]+$"}
BOOLEAN_STRING = {"type": "string", "enum": ["true", "false"]}
NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253}

REDIS_LIST_METADATA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "address": {"type": "string", "pattern": "^[^:/]+:[0-9]+$"},  # host:port
        "addressFromEnv": {"type": "string"},
        "host": {"type": "string"},
        "hostFromEnv": {"type": "string"},
        "port": INTEGER_STRING,
        "portFromEnv": {"type": "string"},
        "usernameFromEnv": {"type": "string"},
        "passwordFromEnv": {"type": "string"},
        "listName": {"type": "string", "minLength": 1},
        "listLength": {"type": "string", "pattern": "^[1-9][0-9]*$"},
        "activationListLength": INTEGER_STRING,
        "enableTLS": BOOLEAN_STRING,
        "unsafeSsl": BOOLEAN_STRING,
        "databaseIndex": INTEGER_STRING,
    },
    # KEDA defaults listLength to 5; these manifests state the target they scale on.
    "required": ["listName", "listLength"],
    "oneOf": [
        {"required": ["address"]},
        {"required": ["addressFromEnv"]},
        {"required": ["host", "port"]},
        {"required": ["hostFromEnv", "portFromEnv"]},
    ],
}

TRIGGER: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type", "metadata"],
    "properties": {
        "type": {"type": "string", "minLength": 1},
        "name": {"type": "string"},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "authenticationRef": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": NAME,
                "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
            },
        },
        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
        "useCachedMetrics": {"type": "boolean"},
    },
    "allOf": [
        {
            "if": {"properties": {"type": {"const": "redis"}}},
            "then": {"properties": {"metadata": REDIS_LIST_METADATA}},
        }
    ],
}

SCALED_OBJECT: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": NAME,
                "namespace": NAME,
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": NAME,
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": SECONDS,
                "cooldownPeriod": COUNT,
                "initialCooldownPeriod": COUNT,
                "idleReplicaCount": {"const": 0},  # the only value KEDA supports
                "minReplicaCount": COUNT,
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["failureThreshold", "replicas"],
                    "properties": {
                        "failureThreshold": {"type": "integer", "minimum": 1},
                        "replicas": COUNT,
                        "behavior": {
                            "enum": [
                                "static",
                                "currentReplicas",
                                "currentReplicasIfHigher",
                                "currentReplicasIfLower",
                            ]
                        },
                    },
                },
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"name": NAME, "behavior": {"type": "object"}},
                        },
                        "scalingModifiers": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["formula", "target"],
                            "properties": {
                                "formula": {"type": "string"},
                                "target": {"type": "string"},
                                "activationTarget": {"type": "string"},
                                "metricType": {"enum": ["AverageValue", "Value"]},
                            },
                        },
                    },
                },
                "triggers": {"type": "array", "minItems": 1, "items": TRIGGER},
            },
        },
    },
}

_TARGET_REF: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["parameter", "name", "key"],
    "properties": {
        "parameter": {"type": "string", "minLength": 1},
        "name": NAME,
        "key": {"type": "string", "minLength": 1},
    },
}

TRIGGER_AUTHENTICATION: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "TriggerAuthentication"},
        "metadata": SCALED_OBJECT["properties"]["metadata"],
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "secretTargetRef": {"type": "array", "minItems": 1, "items": _TARGET_REF},
                "configMapTargetRef": {"type": "array", "minItems": 1, "items": _TARGET_REF},
                "env": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["parameter", "name"],
                        "properties": {
                            "parameter": {"type": "string"},
                            "name": {"type": "string"},
                            "containerName": {"type": "string"},
                        },
                    },
                },
                "podIdentity": {"type": "object"},
                "hashiCorpVault": {"type": "object"},
                "azureKeyVault": {"type": "object"},
                "awsSecretManager": {"type": "object"},
                "gcpSecretManager": {"type": "object"},
                "boundServiceAccountToken": {"type": "array"},
            },
        },
    },
}
"""KEDA's "TriggerAuthentication specification": where a scaler's secrets come from."""

CUSTOM_RESOURCE_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION,
}
