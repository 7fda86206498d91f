"""The book's kernel-free HTML components: the Amdahl explorer (Chapter 8) and the quizzes."""
import pytest


def test_amdahl_explorer_html_has_its_sliders_points_and_script():
    pytest.importorskip("IPython")
    from pruning_lab.book import amdahl_explorer

    html = amdahl_explorer([{"label": "decode <FFN 512>", "f": 0.6, "s": 1.8, "measured": 1.4}], f=0.7).data
    for key in ("f", "s", "b"):
        assert f'data-k="{key}"' in html
    assert 'value="0.7"' in html and "<script>" in html and "amdahl-explorer" in html
    assert "decode &lt;FFN 512&gt;" in html  # labels are escaped in the legend
    assert f"predicted {1 / (0.4 + 0.6 / 1.8):.2f}x" in html
    with pytest.raises(ValueError, match="points"):
        amdahl_explorer([{"f": 0.5}])


def test_quiz_html_checks_its_questions():
    pytest.importorskip("IPython")
    from pruning_lab.book import quiz

    html = quiz([{"q": "Which <one>?", "options": [("a", True, "because"), ("b", False, "no: misconception")]},
                 {"q": "How many?", "answer": 1.54, "tol": 0.01, "why": "Amdahl", "hint": "add times"}]).data
    assert html.count('type="radio"') == 2 and 'type="number"' in html and "<script>" in html
    assert "Which &lt;one&gt;?" in html and 'data-answer="1.54"' in html
    with pytest.raises(ValueError, match="exactly one option"):
        quiz([{"q": "x", "options": [("a", True, ""), ("b", True, "")]}])
    with pytest.raises(ValueError, match="exactly one of"):
        quiz([{"q": "x"}])
    with pytest.raises(ValueError, match="'hint'"):
        quiz([{"q": "x", "answer": 1, "tol": 0.1, "why": "w"}])
