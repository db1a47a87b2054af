"""finsent serve: the HTTP service and its page; its limits are the flags of `Limits`."""

from dataclasses import dataclass, fields

from finsent.cli import common
from finsent.core.fields import opt
from finsent.core.options import Config
from finsent.serving.errors import Limits

HELP = "HTTP service: POST /v1/classify, GET /v1/model, GET|HEAD /health, OpenAPI at /docs, a page at /"
EXAMPLE = "finsent serve --model runs/demo/merged_model --port 8000"
SECTIONS = ("model", "prompt", "data.labels")


@dataclass
class Args(Limits):
    config: str | None = common.config()
    adapter: str | None = common.adapter()
    host: str = opt("127.0.0.1", "address to bind (loopback unless you mean it)")
    port: int = opt(8000, "TCP port", at_least=0, at_most=65535)
    priors: str | None = common.priors()
    batch_size: int = common.batch_size()


def main(args: Args, cfg: Config) -> int:
    from finsent.serving.api import Classifier
    from finsent.serving.app import serve

    limits = Limits(**{f.name: getattr(args, f.name) for f in fields(Limits)})
    serve(
        Classifier.from_config(cfg, args.adapter, args.batch_size, args.priors), args.host, args.port, limits
    )
    return 0
