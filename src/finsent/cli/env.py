"""finsent env: what to paste into a bug report."""

from dataclasses import dataclass

from finsent.core.fields import opt

HELP = "versions, device and dtype finsent would use: what to paste into a bug report"
EXAMPLE = "finsent env      # paste this into a bug report"


@dataclass
class Args:
    json: bool = opt(False, "print JSON")


def main(args: Args, cfg: None) -> int:
    from finsent.modeling.device import describe_environment

    info = describe_environment()
    if args.json:
        import json

        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0
