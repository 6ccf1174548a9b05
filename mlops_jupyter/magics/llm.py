"""`%mlops_llm_eval DATA [--model VAR] ...`: evaluate LLM answers held in a variable and
show the scores (logged to the active run, if any). The logic lives in mlops_jupyter.llm."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring


@magics_class
class LlmMagics(Magics):
    def _var(self, name: str | None, what: str) -> Any:
        if name is None:
            return None
        ns = self.shell.user_ns
        if name not in ns:
            raise UsageError(f"{what}: no variable {name!r} in the notebook")
        return ns[name]

    @magic_arguments()
    @argument("data", help="variable holding a DataFrame or list of dicts (question, answer, ...)")
    @argument("--model", default=None, metavar="VAR", help="callable prompt -> answer")
    @argument("--judge", default=None, metavar="VAR", help="callable prompt -> score (1-5)")
    @argument("--metrics", default=None, help="comma-separated metric names (default: all)")
    @argument("--prompt-template", default=None, metavar="VAR", help="variable with {question}")
    @argument("--embedder", default=None, metavar="VAR", help="callable list[str] -> vectors")
    @argument("--max-tokens", type=int, default=4096, help="longer texts are not scored")
    @argument("--no-log", action="store_true", help="do not log to the active run")
    @line_magic
    def mlops_llm_eval(self, line: str = ""):
        """Score LLM answers offline (relevance, similarity, groundedness, coherence,
        reference metrics, text statistics, optional judge); inside a run the scores are
        logged as llm/... metrics and the per-example table as an artifact."""
        args = parse_argstring(self.mlops_llm_eval, line)
        data = self._var(args.data, "data")
        metrics = (
            [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
        )
        from ..llm import llm_eval

        return llm_eval(
            data,
            model=self._var(args.model, "--model"),
            metrics=metrics,
            judge=self._var(args.judge, "--judge"),
            embedder=self._var(args.embedder, "--embedder"),
            prompt_template=self._var(args.prompt_template, "--prompt-template"),
            max_tokens=args.max_tokens,
            log=not args.no_log,
        )


def register(ipython) -> None:
    """Register the LLM evaluation magic on `ipython`."""
    ipython.register_magics(LlmMagics(ipython))
