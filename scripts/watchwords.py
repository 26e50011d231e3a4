"""Keyword watch — the pubm / msgm / notc family (wildcard masks).

- pubm: anyone saying "sev1" in a channel gets an acknowledgement with the
  incident runbook; the pubm handler returns True so that a "!sev1 ..."
  line is not also handled as a pub command.
- msgm: private messages that mention "oncall" get the rota hint.
- notc: notices from services are logged.
"""

import logging

from masterchief import Event, bind

log = logging.getLogger("scripts.watchwords")


@bind("pubm", "-|-", "% *sev1*")
def sev1(ev: Event) -> bool:
    ev.reply(f"{ev.nick}: SEV1 noted in {ev.channel} - runbook: https://runbooks.example/sev1")
    return True


@bind("msgm", "-|-", "*oncall*")
def oncall(ev: Event) -> None:
    ev.reply("the on-call rota lives in #oncall; page with !page there")


@bind("notc", "-|-", "*")
def notices(ev: Event) -> None:
    log.info("notice from %s: %s", ev.nick, ev.text)
