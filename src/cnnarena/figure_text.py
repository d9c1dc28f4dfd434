"""Names a user gave (classes, files, models, runs) as matplotlib must draw them: as written.

matplotlib reads the text between two "$" as mathematical notation, so a class "cost $5 $" lost its dollars, and a
class folder named `a$\\frac{$b` stopped a finished run with a parse error while its plots were drawn. An escaped
dollar is drawn as it is. (Turning mathematical notation off for a whole figure instead would also print the
10^k tick labels of log axes as source.)
"""

from __future__ import annotations


def literal(text: object) -> str:
    """`text` as matplotlib draws it unchanged."""
    return str(text).replace("$", r"\$")
