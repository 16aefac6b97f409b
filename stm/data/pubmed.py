"""Parse PubMed/MEDLINE baseline XML into plain records (title, abstract sections, MeSH, keywords)."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

_WS = re.compile(r"\s+")


@dataclass
class Article:
    pmid: str
    title: str
    sections: list[tuple[str, str]]  # (label, text); label "" for unstructured abstracts
    language: str
    year: str
    mesh_major: list[str] = field(default_factory=list)
    mesh_minor: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    pub_types: list[str] = field(default_factory=list)

    @property
    def abstract(self) -> str:
        return " ".join(text for _, text in self.sections)

    @property
    def is_covid(self) -> bool:
        text = f"{self.title} {self.abstract} {' '.join(self.keywords)}".lower()
        return any(t in text for t in ("covid", "sars-cov-2", "coronavirus disease 2019"))


def _text(el) -> str:
    return _WS.sub(" ", "".join(el.itertext())).strip() if el is not None else ""


def parse_medline(path: Path | str) -> Iterator[Article]:
    """Stream articles with an English title and abstract from a (gzipped) MEDLINE XML file."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for _, el in etree.iterparse(f, tag="PubmedArticle"):
            cit = el.find("MedlineCitation")
            art = cit.find("Article") if cit is not None else None
            if art is None:
                el.clear()
                continue
            sections = [(a.get("Label", "") or "", _text(a)) for a in art.findall("Abstract/AbstractText")]
            sections = [(lab.upper(), txt) for lab, txt in sections if txt]
            lang = (art.findtext("Language") or "").strip()
            title = _text(art.find("ArticleTitle")).strip("[]. ")
            if sections and title and lang == "eng":
                major, minor = [], []
                for mh in cit.findall("MeshHeadingList/MeshHeading"):
                    d = mh.find("DescriptorName")
                    if d is None:
                        continue
                    is_major = d.get("MajorTopicYN") == "Y" or any(
                        q.get("MajorTopicYN") == "Y" for q in mh.findall("QualifierName")
                    )
                    (major if is_major else minor).append(_text(d))
                yield Article(
                    pmid=(cit.findtext("PMID") or "").strip(),
                    title=title,
                    sections=sections,
                    language=lang,
                    year=(art.findtext("Journal/JournalIssue/PubDate/Year") or "").strip(),
                    mesh_major=major,
                    mesh_minor=minor,
                    keywords=[_text(k) for k in cit.findall("KeywordList/Keyword") if _text(k)],
                    pub_types=[_text(p) for p in art.findall("PublicationTypeList/PublicationType")],
                )
            el.clear()
            while el.getprevious() is not None:
                del el.getparent()[0]


_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT.split(text) if s.strip()]


def truncate_words(text: str, n: int) -> str:
    words = text.split()
    return text if len(words) <= n else " ".join(words[:n])
