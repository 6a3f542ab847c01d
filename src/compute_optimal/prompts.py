"""Few-shot prompt templates and stop sequences.

The paper samples pretrained models with few-shot prompts: GSM8K 8-shot (the chain-of-thought
exemplars of Wei et al., 2022) and MATH 4-shot (the Minerva prompt of Lewkowycz et al., 2022, answer
in ``\\boxed{}`` and a "Final Answer" line). ``arith`` and ``arith_graph`` (the generated datasets) use 4
hand-written exemplars each in their own solution style. Completions stop where the next exemplar would start, so a
completion ends where its answer ends; the same text (prompt + completion) is the fine-tuning example.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError

GSM8K_EXEMPLARS: tuple[tuple[str, str], ...] = (
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, there will be 21 trees. How many trees did the grove workers plant today?",
        "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have been 21 - 15 = 6. The answer is 6.",
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, they had 74 - 35 = 39. The answer is 39.",
    ),
    (
        "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did Jason give to Denny?",
        "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. The answer is 8.",
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have now?",
        "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9. The answer is 9.",
    ),
    (
        "There were nine computers in the server room. Five more computers were installed each day, from monday to thursday. How many computers are now in the server room?",
        "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 computers were added. 9 + 20 is 29. The answer is 29.",
    ),
    (
        "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf balls did he have at the end of wednesday?",
        "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, he had 35 - 2 = 33 golf balls. The answer is 33.",
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars left. 23 - 15 is 8. The answer is 8.",
    ),
)

MINERVA_EXEMPLARS: tuple[tuple[str, str], ...] = (
    (
        "Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.}",
        "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, so $x\\ge2$, and $5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to zero, so $5-x>0$, which gives $x<5$. Therefore, the domain of the expression is $\\boxed{[2,5)}$.\nFinal Answer: The final answer is $[2,5)$. I hope it is correct.",
    ),
    (
        "If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find $\\det (\\mathbf{A} \\mathbf{B}).$",
        "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) = (2)(12) = \\boxed{24}.$\nFinal Answer: The final answer is $24$. I hope it is correct.",
    ),
    (
        "Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how many times must Terrell lift them in order to lift the same total weight?",
        "If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\\cdot 12\\cdot20=480$ pounds of weight.  If he lifts two 15-pound weights instead for $n$ times, he will lift a total of $2\\cdot15\\cdot n=30n$ pounds of weight.  Equating this to 480 pounds, we can solve for $n$:\n\\begin{align*}\n30n&=480\\\\\n\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n\\end{align*}\nFinal Answer: The final answer is $16$. I hope it is correct.",
    ),
    (
        "If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}has a solution $(x, y)$ where $x$ and $y$ are both nonzero, find $\\frac{a}{b},$ assuming $b$ is nonzero.",
        "If we multiply the first equation by $-\\frac{3}{2}$, we obtain\n\n$$6y-9x=-\\frac{3}{2}a.$$Since we also know that $6y-9x=b$, we have\n\n$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}.$$\nFinal Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct.",
    ),
)

ARITH_EXEMPLARS: tuple[tuple[str, str], ...] = (
    (
        "Ben has 4 marbles. He finds 3 more marbles. How many marbles does Ben have now?",
        "Ben has 4 marbles and finds 3 more, so he has 4 + 3 = 7 marbles. The answer is 7.",
    ),
    (
        "A shelf holds 18 books. Lily takes 6 books away. Then she puts 2 books back. How many books are on the shelf now?",
        "The shelf starts with 18 books. Lily takes 6 away, so 18 - 6 = 12 books are left. She puts 2 back, so 12 + 2 = 14 books. The answer is 14.",
    ),
    (
        "Omar buys 3 bags of oranges. Each bag has 5 oranges. He eats 4 oranges. How many oranges does Omar have left?",
        "Omar buys 3 bags with 5 oranges each, so he has 3 * 5 = 15 oranges. He eats 4, so 15 - 4 = 11 oranges are left. The answer is 11.",
    ),
    (
        "A baker makes 24 cookies. She packs them equally into 4 boxes. Then she adds 2 more cookies to one box. How many cookies are in that box?",
        "The baker packs 24 cookies into 4 boxes, so each box has 24 / 4 = 6 cookies. She adds 2 more to one box, so it has 6 + 2 = 8 cookies. The answer is 8.",
    ),
)


ARITH_GRAPH_EXEMPLARS: tuple[tuple[str, str], ...] = (
    (
        "Ben has 14 marbles. Lily has 9 more marbles than Ben. How many marbles does Lily have?",
        "Lily has 9 more marbles than Ben, so Lily has 14 + 9 = 23 marbles. The answer is 23.",
    ),
    (
        "Omar has 3 bags with 12 oranges in each bag. Zoe has 25 oranges. How many oranges do Omar and "
        "Zoe have together?",
        "Omar has 3 bags with 12 oranges in each bag, so Omar has 3 * 12 = 36 oranges. Together, Omar and Zoe "
        "have 36 + 25 = 61 oranges. The answer is 61.",
    ),
    (
        "Mia owns 48 books. Leo has a quarter as many books as Mia. Ava has 17 books. Sam has as many "
        "books as Leo and Ava combined. Nora has 6 fewer books than Ava. How many books does Sam have?",
        "Leo has a quarter as many books as Mia, so Leo has 48 / 4 = 12 books. Sam has as many books as Leo "
        "and Ava combined, so Sam has 12 + 17 = 29 books. The answer is 29.",
    ),
    (
        "Ravi collected 31 stamps. Grace has 58 stamps. Tom has 13 fewer stamps than Grace. Hana has "
        "twice as many stamps as Ravi. How many stamps do Tom, Hana and Ravi have in total?",
        "Hana has twice as many stamps as Ravi, so Hana has 31 * 2 = 62 stamps. Tom has 13 fewer stamps than "
        "Grace, so Tom has 58 - 13 = 45 stamps. Together, Tom, Hana and Ravi have 45 + 62 = 107 and "
        "107 + 31 = 138 stamps. The answer is 138.",
    ),
)


@dataclass(frozen=True)
class PromptTemplate:
    """A few-shot prompt: exemplars, the per-problem frame, and where a completion must stop."""

    name: str
    exemplars: tuple[tuple[str, str], ...]
    question_prefix: str
    answer_prefix: str
    separator: str
    stop: tuple[str, ...]

    def render(self, question: str) -> str:
        """The prompt for one problem: exemplars, then the question, ending where the model writes."""
        shots = [f"{self.question_prefix}{q}{self.answer_prefix}{a}" for q, a in self.exemplars]
        return self.separator.join([*shots, f"{self.question_prefix}{question}{self.answer_prefix}"])

    def clip(self, completion: str) -> str:
        """Cut a completion at the first stop sequence (engines that cannot stop on strings by themselves)."""
        cut = len(completion)
        for s in self.stop:
            i = completion.find(s)
            if i != -1:
                cut = min(cut, i)
        return completion[:cut].rstrip()


_TEMPLATES = {
    "gsm8k": (
        GSM8K_EXEMPLARS,
        "Question: ",
        "\nAnswer: ",
        "\n\n",
        ("\n\nQuestion:", "\nQuestion:", "\n\n\n"),
    ),
    "minerva_math": (
        MINERVA_EXEMPLARS,
        "Problem:\n",
        "\n\nSolution:\n",
        "\n\n",
        ("\n\nProblem:", "\nProblem:", "\n\n\n"),
    ),
    "arith": (
        ARITH_EXEMPLARS,
        "Question: ",
        "\nAnswer: ",
        "\n\n",
        ("\n\nQuestion:", "\nQuestion:", "\n\n\n"),
    ),
    "arith_graph": (
        ARITH_GRAPH_EXEMPLARS,
        "Question: ",
        "\nAnswer: ",
        "\n\n",
        ("\n\nQuestion:", "\nQuestion:", "\n\n\n"),
    ),
}


class PromptError(UserError, ValueError):
    """Unknown template or an impossible number of shots."""


def get_template(name: str, num_shots: int | None = None) -> PromptTemplate:
    """Template ``name`` with its first ``num_shots`` exemplars (all of them when None)."""
    if name not in _TEMPLATES:
        raise PromptError(f"unknown prompt template {name!r}; known: {sorted(_TEMPLATES)}")
    exemplars, q, a, sep, stop = _TEMPLATES[name]
    if num_shots is None:
        num_shots = len(exemplars)
    if not 0 <= num_shots <= len(exemplars):
        raise PromptError(
            f"template {name!r} has {len(exemplars)} exemplars; num_shots={num_shots} is out of range"
        )
    return PromptTemplate(name, exemplars[:num_shots], q, a, sep, stop)
