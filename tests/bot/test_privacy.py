"""Phone numbers and emails masked in posted text; amounts and other figures left alone."""

from __future__ import annotations

import pytest

from bot.privacy import mask_contacts


@pytest.mark.parametrize(
    ("said", "posted"),
    [
        ("My number is 512-555-0143.", "My number is [phone]."),
        ("call (512) 555 0143 please", "call [phone] please"),
        ("it's +44 20 7946 0958", "it's [phone]"),
        ("5125550143", "[phone]"),
        ("email ann_lee@example.com or ANN@Example.CO.UK", "email [email] or [email]"),
        ("it is ann dot lee at example dot com", "it is [email]"),
    ],
)
def test_contacts_are_masked(said: str, posted: str) -> None:
    assert mask_contacts(said) == posted


@pytest.mark.parametrize(
    "said",
    ["I need 1,500,000 at 12 Main St", "a loan of $1500000", "credit 742, 350000 liquid", "zip 78701, 2 units"],
)
def test_figures_are_not_taken_for_contacts(said: str) -> None:
    assert mask_contacts(said) == said
