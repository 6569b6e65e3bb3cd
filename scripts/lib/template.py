"""What the scripts do with template.yaml beyond deploying it (needs aws-sam-translator):

    python template.py transform TEMPLATE [Name=Value ...] > transformed.json
        The CloudFormation the SAM translator makes of the template, offline, so the linters check
        what CloudFormation will really be asked to create: cfn-lint on the SAM source cannot see,
        for example, a function Description over Lambda's limit.

    python template.py with-code TEMPLATE DIR > deployable.json
        The template with each function's code in DIR/<its Binary>/ (a folder holding its
        bootstrap) instead of the cargo-lambda build, for `aws cloudformation package`.
"""

import json
import os
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


def functions(template: dict) -> list[dict]:
    return [r for r in template.get("Resources", {}).values() if r.get("Type") == "AWS::Serverless::Function"]


def with_code(template: dict, code_dir: str) -> dict:
    """Each function's CodeUri becomes its prebuilt folder; the build metadata goes."""
    template.get("Globals", {}).get("Function", {}).pop("CodeUri", None)
    for function in functions(template):
        metadata = function.pop("Metadata", {})
        binary = metadata.get("BuildProperties", {}).get("Binary")
        if not binary:
            sys.exit("error: a function has no Metadata.BuildProperties.Binary to find its code by")
        function.setdefault("Properties", {})["CodeUri"] = os.path.join(code_dir, binary)
    return template


def as_packaged(template: dict) -> dict:
    """Local CodeUri paths become S3 locations, as `package` would leave them: the translator
    accepts nothing else, and the code itself does not change what is created."""
    holders = [template.get("Globals", {}).get("Function", {})]
    holders += [f.get("Properties", {}) for f in functions(template)]
    for holder in holders:
        uri = holder.get("CodeUri")
        if isinstance(uri, str) and not uri.startswith("s3://"):
            holder["CodeUri"] = "s3://packaged-code/function.zip"
    return template


class NoManagedPolicies:
    """The template names no managed policies by name, so nothing has to be looked up in IAM."""

    def load(self) -> dict[str, str]:
        return {}


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] not in ("transform", "with-code"):
        sys.exit("usage: template.py transform TEMPLATE [Name=Value ...] | with-code TEMPLATE DIR")
    with open(sys.argv[2], encoding="utf-8") as source:
        template = yaml_parse(source.read())
    if sys.argv[1] == "with-code":
        if len(sys.argv) != 4:
            sys.exit("usage: template.py with-code TEMPLATE DIR")
        result = with_code(template, sys.argv[3])
    else:
        # The translator fills in AWS::Region: any region gives the same resources.
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        parameters = dict(arg.split("=", 1) for arg in sys.argv[3:])
        result = transform(as_packaged(template), parameters, NoManagedPolicies())
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
