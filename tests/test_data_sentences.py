"""The biomedical sentence splitter on hard cases."""
import pytest

from biomamba.data.sentences import split_sentences

CASES = [
    ("Smith et al. reported a rise. The effect was large.",
     ["Smith et al. reported a rise.", "The effect was large."]),
    ("Drugs, e.g. Aspirin and i.e. Heparin, were used. Results followed.",
     ["Drugs, e.g. Aspirin and i.e. Heparin, were used.", "Results followed."]),
    ("Drug A vs. Placebo was tested. It worked.", ["Drug A vs. Placebo was tested.", "It worked."]),
    ("The level rose 1.5-fold to 3.25 mg/dl. Means were 0.5 and 2.0.",
     ["The level rose 1.5-fold to 3.25 mg/dl.", "Means were 0.5 and 2.0."]),
    ("The difference was significant (p < 0.05). No other differences were found.",
     ["The difference was significant (p < 0.05).", "No other differences were found."]),
    ("Survival improved, p < 0.05. Toxicity was low, P = .01. Costs fell.",
     ["Survival improved, p < 0.05.", "Toxicity was low, P = .01.", "Costs fell."]),
    ("As shown in Fig. 2 and No. 3, it held. See Table 1.",
     ["As shown in Fig. 2 and No. 3, it held.", "See Table 1."]),
    ("Data (n = 12; approx. 40% of cases. See above) were pooled. Done.",
     ["Data (n = 12; approx. 40% of cases. See above) were pooled.", "Done."]),
    ("It was studied in the U.S. Army cohort. mRNA levels fell. p53 was mutated. β-Blockers helped.",
     ["It was studied in the U.S. Army cohort.", "mRNA levels fell.", "p53 was mutated.", "β-Blockers helped."]),
    ("E. coli and S. aureus grew. Was it real? Yes! It was.",
     ["E. coli and S. aureus grew.", "Was it real?", "Yes!", "It was."]),
    ('He said "it works." Then he left. (Results are shown.) 12 patients died.',
     ['He said "it works."', "Then he left.", "(Results are shown.)", "12 patients died."]),
    ("Samples were collected in Jan. 2010 at St. Louis. Analysis ended.",
     ["Samples were collected in Jan. 2010 at St. Louis.", "Analysis ended."]),
    ("", []),
    ("No final period", ["No final period"]),
]


@pytest.mark.parametrize("text, expected", CASES)
def test_hard_cases(text, expected):
    assert split_sentences(text) == expected


@pytest.mark.parametrize("text, _", CASES)
def test_never_loses_text(text, _):
    assert " ".join(split_sentences(text)) == " ".join(text.split())
