"""A pure-Python port of the Java lexer inside pycocoevalcap's ``PTBTokenizer``, for tokenizing without a JVM.

pycocoevalcap (Chen et al. 2015, "Microsoft COCO Captions: Data Collection and Evaluation Server", arXiv
1504.00325) runs Stanford CoreNLP 3.4.1's ``PTBTokenizer -preserveLines -lowerCase`` over its captions, one per
line. Its lexer, ``PTBLexer``, is a JFlex scanner: at every position the longest match over a list of rules wins
(ties go to the earlier rule; the trailing context of a rule ``r1/r2`` counts towards its length) and the rule's
action makes the token (``"("`` -> ``-LRB-``, ``"don't"`` -> ``do n't``, ``"`` -> ``````/``''``).
:func:`tokenize_lines` does the same with ``re``; lowercasing and punctuation removal follow in
:mod:`captioning.metrics.tokenize`.

The rules were rebuilt from CoreNLP's public ``PTBLexer.flex`` (2012 and 2017 versions) and corrected against the
3.4.1 jar wherever it disagreed: every BMP character alone, between letters and between digits (254k lines), and
random caption-like and punctuation-heavy text (over a million lines) give the jar's tokens. 3.4.1 facts that no
public source states, for example: ``"approx."`` is two tokens but ``"ft."`` one, ``"dunno"`` stays whole, SGML
attribute values must be quoted, and ``"5photo.jpg"`` is a file name only before a space or ``.?!,``.

Known departures, none in caption-like text: a quoted SGML attribute value may run over a line break in Java, not
here; lone surrogates are dropped here, while pycocoevalcap fails to write them to its temp file.
"""

import re
import unicodedata
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import NamedTuple

# Letters that Unicode added after the version JFlex used for 3.4.1 (about 6.2): untokenizable (dropped) in Java.
_NEWER_LETTERS = (
    "\u037f\u0528-\u052f\u0560\u0588\u05ef\u0860-\u086a\u0870-\u0887\u0889-\u088e\u08a1\u08ad-\u08c9\u0978\u0980"
    "\u09fc\u0af9\u0c34\u0c5a\u0c5d\u0c80\u0cdd\u0d04\u0d54-\u0d56\u0d5f\u0e86\u0e89\u0e8c\u0e8e-\u0e93\u0e98"
    "\u0ea0\u0ea8\u0ea9\u0eac\u13f5\u13f8-\u13fd\u16f1-\u16f8\u170d\u171f\u1878\u191d\u191e\u19b0-\u19c0\u19c8"
    "\u19c9\u1b4c\u1c80-\u1c88\u1c90-\u1cba\u1cbd-\u1cbf\u1cf2\u1cf3\u1cfa\u2c2f\u2c5f\u312e\u312f\u31bb-\u31bf"
    "\u4db6-\u4dbf\u9fcd-\u9fff\ua698-\ua69d\ua78f\ua794-\ua79f\ua7ab-\ua7ca\ua7d0\ua7d1\ua7d3\ua7d5-\ua7d9"
    "\ua7f2-\ua7f7\ua8fd\ua8fe\ua9e0-\ua9e4\ua9e6-\ua9ef\ua9fa-\ua9fe\uaa7e\uaa7f\uab30-\uab5a\uab5c-\uab69"
    "\uab70-\uabbf"
)
_NEWER_DIGITS = "\u0de6-\u0def\ua9f0-\ua9f9"


def _char_class(predicate: Callable[[str], bool], exclude: str) -> str:
    """The BMP characters for which ``predicate`` holds, minus ``exclude``, as the body of a regex class."""
    excluded = re.compile(f"[{exclude}]")
    parts, start = [], None
    for code in range(0x10001):
        inside = code < 0x10000 and predicate(chr(code)) and not excluded.match(chr(code))
        if inside and start is None:
            start = code
        elif not inside and start is not None:
            parts.append(re.escape(chr(start)) + ("" if code - 1 == start else "-" + re.escape(chr(code - 1))))
            start = None
    return "".join(parts)


# JFlex [:letter:]; U+1885 and U+1886 were letters (Lo) before Unicode 9 made them marks.
_JLETTER = _char_class(lambda c: unicodedata.category(c)[0] == "L" or c in "\u1885\u1886", _NEWER_LETTERS)
_JUPPER = _char_class(lambda c: unicodedata.category(c) == "Lu", _NEWER_LETTERS)  # JFlex [:uppercase:]
_JDIGIT = _char_class(lambda c: unicodedata.category(c) == "Nd", _NEWER_DIGITS)  # JFlex [:digit:]
# A letter or digit as the lexer sees them. Every rule that takes one makes a token that holds it, except those of
# character entities, which start with "&" ("&quot;" -> "``", "&nbsp;" is skipped): a line with one and no "&" keeps
# a token that pycocoevalcap's PUNCTUATIONS do not remove (see captioning.metrics.tokenize.has_ptb_tokens).
LETTER_OR_DIGIT = re.compile(f"[{_JLETTER}{_JDIGIT}]")
# WORD also takes these (PTBLexer.flex's LETTER): combining marks and modifier letters of many scripts.
_LETTER_EXTRA = (
    "\u00ad\u0237-\u024f\u02c2-\u02c5\u02d2-\u02df\u02e5-\u02ff\u0300-\u036f\u0370-\u037d\u0384\u0385\u03cf\u03f6"
    "\u03fc-\u03ff\u0483-\u0487\u04cf\u04f6-\u04ff\u0510-\u0525\u055a-\u055f\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4"
    "\u05c5\u05c7\u0615-\u061a\u063b-\u063f\u064b-\u065e\u0670\u06d6-\u06ef\u06fa-\u06ff\u070f\u0711\u0730-\u074f"
    "\u0750-\u077f\u07a6-\u07b1\u07ca-\u07f5\u07fa\u0900-\u0903\u093c\u093e-\u094e\u0951-\u0955\u0962\u0963"
    "\u0981-\u0983\u09bc-\u09c4\u09c7\u09c8\u09cb-\u09cd\u09d7\u09e2\u09e3\u0a01-\u0a03\u0a3c\u0a3e-\u0a4f"
    "\u0a81-\u0a83\u0abc-\u0acf\u0b82\u0bbe-\u0bc2\u0bc6-\u0bc8\u0bca-\u0bcd\u0c01-\u0c03\u0c3e-\u0c56"
    "\u0d3e-\u0d44\u0d46-\u0d48\u0e30-\u0e3a\u0e47-\u0e4e\u0eb1-\u0ebc\u0ec8-\u0ecd"
)
_MISC_SYMBOL = (
    "+%&~^|\\\\\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00ba\u00d7\u00f7\u0387\u05be\u05c0\u05c3\u05c6"
    "\u05f3\u05f4\u0600-\u0603\u0606-\u060a\u060c\u0614\u061b\u061e\u066a\u066d\u0703-\u070d\u07f6-\u07f8\u0964"
    "\u0965\u0e4f\u1fbd\u2016\u2017\u2020-\u2023\u2030-\u2038\u203b\u203e-\u2042\u2044\u207a-\u207f\u208a-\u208e"
    "\u2100-\u214f\u2190-\u21ff\u2200-\u2bff\u3012\u30fb\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"
)

# JFlex macros, written as in PTBLexer.flex and expanded where a rule names them as {NAME}. The scanner is
# %caseless: literal text matches in any case but character classes do not, hence the (?i:...) around literals.
_MACROS: dict[str, str] = {}
_MACRO_REF = re.compile(r"\{([A-Z][A-Z0-9_]*)\}")


def _x(pattern: str) -> str:
    return _MACRO_REF.sub(lambda m: f"(?:{_MACROS[m[1]]})", pattern)


for _name, _pattern in [
    ("SPACE", r"[ \t\u00a0\u2000-\u200a\u3000]"),
    ("SPACENL", r"{SPACE}|\r|\r?\n|\u2028|\u2029|\u000b|\u000c|\u0085"),
    (
        "SGML",
        r"<(?:[!?][A-Za-z\-][^>\r\n]*|[A-Za-z][A-Za-z0-9_:.\-]*(?:[ ]+[A-Za-z][A-Za-z0-9_:.\-]*"
        r"(?:[ ]*=[ ]*(?:'[^'\r\n]*'|\"[^\"\r\n]*\"))?)*[ ]*/?|/[A-Za-z][A-Za-z0-9_:.\-]*)[ ]*>",
    ),
    ("JLETTER", f"[{_JLETTER}]"),
    ("DIGIT", f"[{_JDIGIT}]"),
    ("UPPER", f"[{_JUPPER}]"),
    ("LD", f"[{_JLETTER}{_JDIGIT}]"),
    ("LETTER", f"[{_JLETTER}{_LETTER_EXTRA}]|&[aeiouAEIOU](?i:acute|grave|uml);"),
    ("WORD", r"{LETTER}(?:{LETTER}|{DIGIT})*(?:[.!?]{LETTER}(?:{LETTER}|{DIGIT})*)*"),
    ("APOS", r"['\u0092\u2019]|&(?i:apos);"),
    ("APOSETC", r"{APOS}|[`\u0091\u2018\u201b]"),
    ("REDAUX", r"{APOS}(?:[msdMSD]|(?i:re|ve|ll))"),
    ("SREDAUX", r"(?i:n){APOSETC}(?i:t)"),
    ("HYPHEN", r"[\-_\u058a\u2010\u2011]"),
    ("NUM", r"{DIGIT}*(?:[.:,\u00ad\u066b\u066c]{DIGIT}+)+|{DIGIT}+"),
    (
        "ACRO",
        r"(?i:u)\.(?i:s)\.-(?:(?i:u)\.(?i:s)\.(?i:s)\.(?i:r)|(?i:u)\.(?i:k))"
        r"|(?i:canada|sino|korean|eu|japan|non)-(?i:u)\.(?i:s)|[A-Za-z](?:\.[A-Za-z])*",
    ),
    (
        "ACRO2",
        r"(?i:u)\.(?i:s)\.-(?:(?i:u)\.(?i:s)\.(?i:s)\.(?i:r)|(?i:u)\.(?i:k))"
        r"|(?i:canada|sino|korean|eu|japan|non)-(?i:u)\.(?i:s)|[A-Za-z](?:\.[A-Za-z])+",
    ),
    ("HTHING", r"[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:{ACRO2}\.|[A-Za-z0-9\u00ad]+))+"),
    ("THING", r"(?:[dDoOlL]{APOSETC}{LD})?{LD}+(?:{HYPHEN}(?:[dDoOlL]{APOSETC}{LD})?{LD}+)*"),
    ("THINGA", r"[A-Z]+(?:(?:[+&]|&(?i:amp);)[A-Z]+)+"),
    ("URLEND", r"[^ \t\n\f\r\"<>|.!?(){},\-]"),
    ("URLHOST", r"(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\.)+"),  # ",-_" is a range, as in PTBLexer.flex
    # Abbreviations, from PTBLexer.flex's lists as 3.4.1 has them.
    (
        "ABBREV1",
        r"(?:(?i:jan|feb|mar|apr|jun|jul|aug|sept?|oct|nov|dec|mon|tues?|wed|thu|thurs|fri|ala|ariz)"
        r"|[A](?i:z)|[A](?i:rk)|(?i:calif|colo|conn|ct|dak)|[D](?i:el)|(?i:fla|ga)|[I](?i:ll)|(?i:ind|kans?|ky)"
        r"|[L](?i:a)|[M](?i:ass)|(?i:md|mich|minn)|[M](?i:iss)|(?i:mo|mont|neb|nev|okla)|[O](?i:re)|[P](?i:a)"
        r"|(?i:penn|tenn)|[T](?i:ex)|(?i:va|vt)|[W](?i:ash)|(?i:wisc?|wyo|inc|cos?|corp|pp?t[ye]s?|ltd|plc|rt|bancorp"
        r"|bhd|assn|univ|intl|sys|tel|est|ext|sq|jr|sr|bros|ed\.d|ph\.d|blvd|rd|esq|etc|al|seq|bldg))\.",
    ),
    (
        "ABBREV4",
        r"(?:(?i:mr|mrs|ms)|[M](?i:iss)|(?i:drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs|govs?|adm|rev"
        r"|maj|sgt|cpl|pvt|capt|ste?|ave|pres|lieut|rt|hon|brig|co?mdr|pfc|spc|supts?|det|mt|ft|adj|adv|asst|assoc"
        r"|ens|insp|mlle|mme|msgr|sfc|sr|vs)|[v]|(?i:alex|wm|jos|cie|a\.k\.a|cf|treas|ph|invt|elec|natl|m[ft]g|dept"
        r"|blvd|rd|ave)|{ACRO})",
    ),
]:
    _MACROS[_name] = _x(_pattern)

_ACRONYM_FOLLOWERS = (
    r"[A](?i:bout|ccording|dditionally|fter|n|s|t)?|[B](?i:ut)|[E](?i:arlier)|[H](?i:e|er|ere|owever)|[I](?i:f|n|t)"
    r"|[L](?i:ast)|[M](?i:any|ore|r\.|s\.)|[N](?i:ow)|[O](?i:nce|ne|ther|ur)|[S](?i:he|ince|o|ome|uch)"
    r"|[T](?i:hat|he|heir|hen|here|hese|hey|his)|[W](?i:e|hen|hile|hat)|[Y](?i:et|ou)|{SGML}"
)


def _latex_quotes(text: str, probably_left: bool) -> str:
    """PTBLexer.latexQuotes: straight quotes by ``probably_left``, curly and CP1252 ones by their direction."""
    text = re.sub(r"&apos;|'", "`" if probably_left else "'", text)
    text = re.sub(r"\"|&quot;", "``" if probably_left else "''", text)
    text = re.sub("[\u0091\u2018\u201b\u2039]", "`", text)
    text = re.sub("[\u0092\u2019\u203a]", "'", text)
    text = re.sub("[\u0093\u201c\u00ab]", "``", text)
    return re.sub("[\u0094\u201d\u00bb]", "''", text)


def _soft(text: str) -> str:
    return text.replace("\u00ad", "") or "-"


def _parens(text: str) -> str:
    return text.replace("(", "-LRB-").replace(")", "-RRB-")


_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_CURRENCY = {"\u00a2": "cents", "\u00a3": "#", "\u0080": "$", "\u00a4": "$", "\u20a0": "$", "\u20ac": "$"}
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}

# An action maps the matched text (without trailing context) to (token or None, characters consumed); consuming
# fewer characters than matched is JFlex's yypushback.
Action = Callable[[str], tuple[str | None, int]]


def _keep(text: str) -> tuple[str | None, int]:
    return text, len(text)


def _skip(text: str) -> tuple[str | None, int]:
    return None, len(text)


def _map(function: Callable[[str], str]) -> Action:
    return lambda text: (function(text), len(text))


def _pushback(count: int) -> Action:
    return lambda text: (text[:-count], len(text) - count)


def _repeat_period(text: str) -> tuple[str | None, int]:
    return text, len(text) - 1


def _acronym(text: str) -> tuple[str | None, int]:
    # "U.S. The" -> "U.S." "." "The", but "A. The" -> "A" "." "The" (the period is returned again next time).
    return (text[:-1] if len(text) == 2 else text), len(text) - 1


class _Rule(NamedTuple):
    pattern: re.Pattern[str]  # group "h" is the token's text when the rule has trailing context
    action: Action


def _rule(head: str, action: Action = _keep, context: str | None = None) -> _Rule:
    if context is None:
        return _Rule(re.compile(_x(head)), action)
    return _Rule(re.compile(f"(?P<h>{_x(head)})(?:{_x(context)})"), action)


# JFlex rule order: on equal lengths the earlier rule wins. Alternations whose branches can match at different
# lengths are split into one rule per branch, because Python's "|" takes the first branch, not the longest.
_RULES: list[_Rule] = [
    _rule(r"(?i:c)\+\+|[cCfF]#"),
    _rule(r"(?i:cannot|'twas)", _pushback(3)),
    _rule(r"{APOS}(?i:tis)|(?i:gonna|gotta|lemme|gimme|wanna)", _pushback(2)),
    _rule(r"{SGML}", _map(lambda text: text.replace(" ", "\u00a0"))),
    _rule(r"&(?i:md|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]", _map(lambda text: "--")),
    _rule(r"&(?i:amp);", _map(lambda text: "&")),
    _rule(r"&(?i:ht|tl|ur|lr|qc|ql|qr|odq|cdq|#[0-9]+);"),
    _rule(r"{WORD}", _map(_soft), context=r"{REDAUX}"),
    _rule(r"[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*", _map(_soft), context=r"{SREDAUX}"),
    _rule(r"{WORD}", _map(_soft)),
    *(
        _rule(apoword)
        for apoword in [
            r"{APOS}(?i:n){APOS}?",
            r"[lLdDjJ]{APOS}",
            r"(?i:dunkin|somethin|ol){APOS}",
            r"{APOS}(?i:em|cause|till?)",
            r"[A-HJ-XZn]{APOSETC}{JLETTER}{2,}",
            r"{APOS}[2-9]0(?i:s)",
            r"(?i:cont'd)\.?",
            r"{JLETTER}+[aeiouyAEIOUY]{APOSETC}[aeiouA-Z]{JLETTER}*",
            r"(?i:'twas|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)",
            r"(?i:o){APOSETC}(?i:o)",
        ]
    ),
    _rule(r"(?i:y){APOS}", context=r"{JLETTER}"),
    _rule(r"(?i:https?)://[^ \t\n\f\r\"<>|(){}]+{URLEND}"),
    # LIKELYURL, with and without a path: the host's dot-separated parts may hold "/", so a greedy host could
    # leave out a longer path.
    *(
        _rule(host + path)
        for host in [r"(?i:www)\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4}", r"{URLHOST}(?i:com|net|org|edu)"]
        for path in ["", r"/[^ \t\n\f\r\"<>|()]+{URLEND}"]
    ),
    _rule(
        r"(?:<|&(?i:lt);)?[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00a0{}]*@(?:[^ \t\n\f\r\"<>|(){}.\u00a0]+\.)*"
        r"[^ \t\n\f\r\"<>|(){}.\u00a0]+(?:>|&(?i:gt);)?"
    ),
    _rule(r"@[a-zA-Z_][a-zA-Z_0-9]*"),
    _rule(r"#(?:{LETTER})+"),
    _rule(r"{REDAUX}", _map(lambda text: _latex_quotes(text, False)), context=r"[^A-Za-z]"),
    _rule(r"{SREDAUX}", _map(lambda text: _latex_quotes(text, False))),
    _rule(r"{DIGIT}{1,2}[\-/]{DIGIT}{1,2}[\-/]{DIGIT}{2,4}"),
    _rule(r"[\-+]?(?:{NUM})", _map(_soft)),
    _rule(r"[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)"),
    _rule(
        r"(?:{DIGIT}{1,4}[\- \u00a0])?{DIGIT}{1,4}(?:\\?/|\u2044){DIGIT}{1,4}",
        _map(lambda text: text.replace(" ", "\u00a0")),
    ),
    _rule(r"[\u00bc\u00bd\u00be\u2153-\u215e]", _map(lambda text: _FRACTIONS.get(text, text))),
    *(
        _rule(tbspec, _map(lambda text: re.sub(r"(?i:&amp;)", "&", text)))
        for tbspec in [
            r"-(?i:rrb|lrb|rcb|lcb|rsb|lsb)-",
            r"(?i:c\.d\.s|pro-|anti-)",
            r"(?i:s)(?:&|&(?i:amp);)(?i:p-500|ls)",
            r"(?i:cap){APOS}(?i:n)",
            r"(?i:c){APOS}(?i:est)",
        ]
    ),
    _rule(r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"),
    _rule(r"[A-Z]*\$|#"),
    _rule(
        r"[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]",
        _map(lambda text: _CURRENCY.get(text, text)),
    ),
    _rule(r"(?:{ACRO})\.", _acronym, context=r"(?:{SPACENL})+(?:" + _ACRONYM_FOLLOWERS + r")(?:{SPACENL})"),
    _rule(r"(?i:ca|figs?|prop|nos?|art|bldg|pp|op)\.", context=r"(?:{SPACENL})?{DIGIT}"),
    _rule(r"{ABBREV1}", _repeat_period, context=r"(?:{SPACENL})(?:{SPACENL}|{UPPER}|{SGML})"),
    _rule(r"{ABBREV1}", context=r"[\s\S]{2}"),
    _rule(r"{ABBREV1}", _repeat_period),  # only at the end of the input
    _rule(r"(?:{ABBREV4})\."),
    _rule(r"{ABBREV4}", context=r"{SPACE}"),
    _rule(r"{ACRO}", context=r"{SPACENL}"),
    _rule(r"{APOS}[0-9][0-9]", context=r"{SPACENL}"),
    _rule(  # FILENAME
        r"(?:{LETTER}|{DIGIT})+(?:\.(?:{LETTER}|{DIGIT})+)*\.(?i:bat|bmp|c|class|cgi|cpp|dll|docx?|exe|gif|gz|h|html?"
        r"|jar|java|jpe?g|mov|mp3|pdf|php|pl|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip)",
        context=r"{SPACENL}|[.?!,]",
    ),
    _rule(r"(?:{WORD})\.", _map(_soft), context=r"[,;:\u3001]"),
    *(
        _rule(phone, _map(lambda text: _parens(text.replace(" ", "\u00a0"))))
        for phone in [
            r"(?:\([0-9]{2,3}\)[ \u00a0]?|(?:\+\+?)?(?:[0-9]{2,4}[\- \u00a0])?[0-9]{2,4}[\- \u00a0])"
            r"[0-9]{3,4}[\- \u00a0]?[0-9]{3,5}",
            r"(?:(?:\+\+?)?[0-9]{2,4}\.)?[0-9]{2,4}\.[0-9]{3,4}\.[0-9]{3,5}",
        ]
    ),
    _rule(r"\"|&(?i:quot);", _map(lambda text: _latex_quotes(text, True)), context=r"[A-Za-z0-9$]"),
    _rule(r"\"|&(?i:quot);", _map(lambda text: _latex_quotes(text, False))),
    _rule(r"\x7f", _skip),
    _rule(r"<|&(?i:lt);", _map(lambda text: "<")),
    _rule(r">|&(?i:gt);", _map(lambda text: ">")),
    _rule(r"[<>]?[:;=][\-o*']?[()DPdpO\\{@|\[\]]", _map(_parens), context=r"[^A-Za-z0-9]"),
    *(
        _rule(smiley, _map(_parens))
        for smiley in [
            r"[\^x=~<>]\.\[\^x=~<>\]",
            r"[\-\^x=~<>']_[\-\^x=~<>']",
            r"\([\-\^x=~<>'][_.]?[\-\^x=~<>']\)",
            r"\([\^x=~<>']-[\^x=~<>'`]\)",
        ]
    ),
    _rule(r"[()\[\]{}]", _map(_BRACKETS.__getitem__)),
    _rule(r"-+", _map(lambda text: "--" if 3 <= len(text) <= 4 else text)),
    *(_rule(dots, _map(lambda text: "...")) for dots in [r"\.{3,5}", r"(?:\.[ \u00a0]){2,4}\.", r"[\u0085\u2026]"]),
    *(_rule(marks) for marks in [r"@+", r"#+", r"_+", r"\*+", r"(?:\\\*){1,3}"]),
    _rule(r"[,;:\u3001]"),
    _rule(r"[?!]+"),
    _rule(r"[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002]"),
    _rule(r"="),
    _rule(r"/"),
    _rule(r"(?:{HTHING})\.", _map(_soft), context=r"[,;:\u3001]"),
    _rule(r"{HTHING}", _map(_soft)),
    _rule(r"(?:{THING})\.", context=r"[,;:\u3001]"),
    _rule(r"{THING}"),
    _rule(r"(?:{THINGA})\.", _map(lambda text: re.sub(r"(?i:&amp;)", "&", text)), context=r"[,;:\u3001]"),
    _rule(r"{THINGA}", _map(lambda text: re.sub(r"(?i:&amp;)", "&", text))),
    _rule(r"'", _map(lambda text: "`"), context=r"[A-Za-z][^ \t\n\r\u00a0]"),
    _rule(r"{REDAUX}", _map(lambda text: _latex_quotes(text, False))),
    *(
        _rule(quotes, _map(lambda text: _latex_quotes(text, False)))
        for quotes in [
            r"{APOS}",
            r"''",
            "[`\u2018\u2019\u201a\u201b\u201c\u201d\u0091-\u0094\u201e\u201f\u2039\u203a\u00ab\u00bb]{1,2}",
        ]
    ),
    _rule(r"<<|>>"),
    _rule(f"[{_MISC_SYMBOL}]"),
    _rule(r"\x00|{SPACE}+|[\u200b\u200e\u200f\ufeff]|&(?i:nbsp);", _skip),
]
_SPACES = " \t\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u3000"  # JFlex SPACE
# A run of spaces that starts with " " or a tab is skipped whole (only SPACES matches there); one that starts with
# another SPACE character is not: LIKELYURL may start with it ("\u00a0.com" is one token).
_FAST_SPACES = re.compile(f"[ \t][{_SPACES}]*")
_FAST_WORD = re.compile(r"[A-Za-z]+(?=[ \t]|$)")
_BLANK = re.compile(f"[{_SPACES}]*")
_ASSIMILATIONS = frozenset(["cannot", "gonna", "gotta", "lemme", "gimme", "wanna"])


def tokenize_lines(lines: Sequence[str]) -> list[list[str]]:
    """Tokenize lines as Java's PTBLexer does ``"\\n".join(lines)`` (one PTBTokenizer ``-preserveLines`` run).

    Args:
        lines: The input lines, in file order, none holding a line break.

    Returns:
        Per line, its tokens, punctuation included (``"(x)"`` gives ``["-LRB-", "x", "-RRB-"]``). Java's
        ``-lowerCase`` comes after the lexer (:mod:`captioning.metrics.tokenize` applies it).
    """
    if any("\n" in line or "\r" in line for line in lines):
        raise ValueError("a line must not hold a line break")
    return [list(tokenize_line(line, _following(lines, i))) for i, line in enumerate(lines)]


def _following(lines: Sequence[str], index: int) -> str | None:
    """What the rules may look at after line ``index``: blank lines, the first line with text, and its line end."""
    if index + 1 == len(lines):
        return None
    end = index + 1
    while end < len(lines) - 1 and _BLANK.fullmatch(lines[end]):
        end += 1
    return "\n".join(lines[index + 1 : end + 1]) + ("\n" if end + 1 < len(lines) else "")


@lru_cache(maxsize=1 << 15)  # references come back every validation
def tokenize_line(line: str, following: str | None) -> tuple[str, ...]:
    """The tokens of one line without line breaks, as Java's PTBLexer makes them.

    ``following`` is the input after the line's line break, None for the last line: a few rules look past the line
    end ("the letter A." followed by a line "The ..." gives "a" "." rather than "a."). Up to the first line that
    holds more than spaces, plus its line break, is enough.
    """
    end = len(line)
    text = line if following is None else f"{line}\n{following}"
    tokens: list[str] = []
    pos = 0
    while pos < end:
        # Fast paths, exact because no rule matches longer there: spaces, and ASCII words that end at a space.
        fast = _FAST_SPACES.match(line, pos) or _FAST_WORD.match(line, pos)
        if fast is not None and fast[0].lower() not in _ASSIMILATIONS:
            if fast[0][0] not in " \t":
                tokens.append(fast[0])
            pos = fast.end()
            continue
        best_length, best_rule, best_match = 0, None, None
        for rule in _RULES:
            match = rule.pattern.match(text, pos)
            if match is not None and match.end() - pos > best_length:
                best_length, best_rule, best_match = match.end() - pos, rule, match
        if best_rule is None or best_match is None:  # untokenizable: Java drops it (and warns once on stderr)
            pos += 1
            continue
        head = best_match["h"] if "h" in best_rule.pattern.groupindex else best_match[0]
        token, consumed = best_rule.action(head)
        assert 0 < consumed <= end - pos, "a token never spans lines"
        if token is not None:
            tokens.append(token)
        pos += consumed
    return tuple(tokens)
