"""The twin Paperless-ngx's documents: German and English invoices, letters, receipts and contracts of a home
lab's household, generated deterministically (a seed), distinct from the gate's shipped documents.

Document types are named as an operator names them in Paperless (``Rechnung``, ``Brief``, ``Kassenbon``,
``Vertrag``, ``Invoice`` ...), not as the gate's classes: the inventory maps them (``inference_gate.paperless.
type_map``), and a type without a mapping (``Vertrag``) is left out of the gate, as an operator's would be. A
document's first line is its correspondent, and its wording carries the keywords the emulated models classify by
(``lab/ollama/behaviour.py``), so the expected answer is the document type's class. Some documents have no
document type (an inbox not yet sorted): the gate never sees them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

CORPUS_SEED = 4242
"""Seed of the twin's corpus: the same documents on every twin."""

# Paperless document type id -> (name, the gate class it maps to in the lab inventory, or None)
DOCUMENT_TYPES: dict[int, tuple[str, str | None]] = {
    1: ("Rechnung", "invoice"),
    2: ("Brief", "letter"),
    3: ("Kassenbon", "receipt"),
    4: ("Invoice", "invoice"),
    5: ("Letter", "letter"),
    6: ("Receipt", "receipt"),
    7: ("Vertrag", None),
}

CORRESPONDENTS: dict[int, str] = {
    1: "Energieversorgung Talheim AG",
    2: "Hausverwaltung Lindenhof GmbH",
    3: "Bäckerei Sonnenkorn",
    4: "Baumarkt Kellermann KG",
    5: "Finanzamt Rotach",
    6: "Northwind Hosting Ltd",
    7: "Harbor Street Pharmacy",
    8: "City of Millbrook Library",
    9: "Kabelnetz Ostalb GmbH",
    10: "Apex Storage Solutions Inc",
}

_GERMAN = {1, 2, 3, 4, 5, 9}
_ITEMS_DE = ["Kaffee", "Brötchen", "Schrauben M6", "Dübel 8 mm", "Holzleim", "Milch", "Akkuschrauber", "Kabelbinder"]
_ITEMS_EN = ["Cough syrup", "Vitamin D", "Plasters", "Toothpaste", "USB cable", "Notebook", "Coffee beans"]


def _money(rng: random.Random, low: float, high: float) -> str:
    return f"{rng.uniform(low, high):.2f}"


def _invoice(rng: random.Random, correspondent: str, german: bool, number: int) -> str:
    amount = _money(rng, 19, 480)
    if german:
        return (
            f"{correspondent}\nRechnung Nr. R-{2026}-{number:04d}\nRechnungsdatum: {rng.randint(1, 28):02d}.0"
            f"{rng.randint(1, 9)}.2026\nFür die Leistungen im abgelaufenen Zeitraum berechnen wir Ihnen "
            f"{amount} EUR zzgl. Umsatzsteuer.\nZahlbar innerhalb von 14 Tagen ohne Abzug.\n"
            f"Wir bitten um Überweisung auf IBAN DE{rng.randint(10, 99)} 6005 0101 {rng.randint(1000, 9999)} 00.\n"
        )
    return (
        f"{correspondent}\nInvoice No. INV-{number:05d}\nBill to: R. Weber, 12 Elm Road\n"
        f"Services for the period: {amount} USD (VAT 0 %)\nAmount due: {amount} USD\nPayment terms: net 30 days.\n"
        "Please remit to the account shown below.\n"
    )


def _letter(rng: random.Random, correspondent: str, german: bool, number: int) -> str:
    if german:
        subject = rng.choice(["Ablesung der Zähler", "Änderung der Hausordnung", "Ihr Bescheid vom März"])
        return (
            f"{correspondent}\nBetreff: {subject}\nSehr geehrte Frau Weber,\nwir möchten Sie darüber informieren, "
            f"dass sich ab dem {rng.randint(1, 28)}. Oktober Änderungen ergeben (Aktenzeichen {number:05d}).\n"
            "Bei Fragen stehen wir Ihnen gern zur Verfügung.\nMit freundlichen Grüßen\nIhr Kundenservice\n"
        )
    topic = rng.choice(["your library membership", "the opening hours this winter", "your storage unit"])
    return (
        f"{correspondent}\nRe: {topic}\nDear Ms Weber,\nwe are writing to let you know about {topic} "
        f"(reference {number:05d}). Nothing is required from you at this time.\nSincerely,\nCustomer Care\n"
    )


def _receipt(rng: random.Random, correspondent: str, german: bool, number: int) -> str:
    items = rng.sample(_ITEMS_DE if german else _ITEMS_EN, 3)
    prices = [_money(rng, 0.5, 30) for _ in items]
    lines = "\n".join(f"{item}  {price}" for item, price in zip(items, prices, strict=True))
    total = f"{sum(float(p) for p in prices):.2f}"
    if german:
        return (
            f"{correspondent}\nKassenbon Bon-Nr. {number}\n{lines}\nSumme EUR {total}\nBar bezahlt, Rückgeld 0,00\n"
            "Vielen Dank für Ihren Einkauf!\n"
        )
    return (
        f"{correspondent}\nReceipt #{number}\n{lines}\nTotal paid {total} USD, card ending 4417\n"
        "Thank you for your purchase!\n"
    )


def _contract(rng: random.Random, correspondent: str, german: bool, number: int) -> str:
    return (
        f"{correspondent}\nVertragsnummer {number:06d}\nLaufzeit 24 Monate, Kündigungsfrist 3 Monate zum "
        f"Vertragsende.\nMonatlicher Grundpreis {_money(rng, 9, 60)} EUR.\n"
    )


_WRITERS = {"invoice": _invoice, "letter": _letter, "receipt": _receipt}


@dataclass
class Corpus:
    """The documents (Paperless' fields: ``id``, ``title``, ``content``, ``document_type``, ``correspondent``,
    ``created``, ``tags``), the document types and correspondents (id -> name)."""

    documents: list[dict] = field(default_factory=list)
    document_types: dict[int, str] = field(default_factory=dict)
    correspondents: dict[int, str] = field(default_factory=dict)


def generate_corpus(count: int = 120, seed: int = CORPUS_SEED) -> Corpus:
    """``count`` documents drawn with ``seed``: about a tenth without a document type, a tenth contracts, the rest
    invoices, letters and receipts in German and English (the correspondent decides the language)."""
    rng = random.Random(seed)
    documents = []
    for number in range(1, count + 1):
        correspondent_id = rng.choice(sorted(CORRESPONDENTS))
        correspondent = CORRESPONDENTS[correspondent_id]
        german = correspondent_id in _GERMAN
        u = rng.random()
        if u < 0.1:
            type_id, text = 7, _contract(rng, correspondent, german, number)
        else:
            kind = ("invoice", "letter", "receipt")[min(int((u - 0.1) / 0.3), 2)]
            names = {"invoice": (1, 4), "letter": (2, 5), "receipt": (3, 6)}[kind]
            type_id = names[0] if german else names[1]
            text = _WRITERS[kind](rng, correspondent, german, number)
        documents.append(
            {
                "id": number,
                "title": text.splitlines()[1][:60],
                "content": text,
                "document_type": None if rng.random() < 0.1 else type_id,
                "correspondent": correspondent_id,
                "created": f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}",
                "tags": [],
            }
        )
    return Corpus(
        documents=documents,
        document_types={k: v[0] for k, v in DOCUMENT_TYPES.items()},
        correspondents=dict(CORRESPONDENTS),
    )
