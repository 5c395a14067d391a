"""paper20: 20 single-turn tasks like the paper's benchmark, written for this project: 7 code
(unit tests run in the sandbox), 7 math (exact answers), 6 instruction following (rule checkers)."""
from __future__ import annotations

from cascade_extproc.offline.eval import checks as c
from cascade_extproc.offline.eval.tasks import Task

_CODE = "Write a Python function {sig}: {what} Reply with the code in one ```python block."
_MATH = "{q} Give the final answer on the last line as 'Answer: <number>'."


def _code(id: str, sig: str, what: str, tests: str, good: str, bad: str) -> Task:
    return Task(id, "code", _CODE.format(sig=sig, what=what), c.code(tests),
                f"```python\n{good.strip()}\n```", f"```python\n{bad.strip()}\n```")


def _math(id: str, q: str, answer: int | str, bad: str) -> Task:
    return Task(id, "math", _MATH.format(q=q), c.number(answer), f"Working it out.\nAnswer: {answer}", bad,
                max_tokens=384)


TASKS: list[Task] = [
    _code("code-add", "add(a, b)", "return the sum of two numbers.",
          "assert add(2, 3) == 5\nassert add(-1, 1) == 0\nassert add(0.5, 0.25) == 0.75",
          "def add(a, b):\n    return a + b", "def add(a, b):\n    return a - b"),
    _code("code-reverse-words", "reverse_words(s)",
          "return the words of s in reverse order, separated by single spaces.",
          "assert reverse_words('hello big world') == 'world big hello'\n"
          "assert reverse_words('  a   b ') == 'b a'\nassert reverse_words('') == ''",
          "def reverse_words(s):\n    return ' '.join(reversed(s.split()))",
          "def reverse_words(s):\n    return s[::-1]"),
    _code("code-palindrome", "is_palindrome(s)",
          "return True when s reads the same backwards, ignoring case and anything but letters and digits.",
          "assert is_palindrome('A man, a plan, a canal: Panama')\nassert not is_palindrome('hello')\n"
          "assert is_palindrome('')\nassert is_palindrome('No lemon, no melon')",
          "def is_palindrome(s):\n    t = [ch.lower() for ch in s if ch.isalnum()]\n    return t == t[::-1]",
          "def is_palindrome(s):\n    return s == s[::-1]"),
    _code("code-fizzbuzz", "fizzbuzz(n)",
          "return a list of strings for 1..n: 'Fizz' for multiples of 3, 'Buzz' for multiples of 5, "
          "'FizzBuzz' for both, else the number.",
          "assert fizzbuzz(5) == ['1', '2', 'Fizz', '4', 'Buzz']\nassert fizzbuzz(15)[-1] == 'FizzBuzz'\n"
          "assert fizzbuzz(0) == []",
          "def fizzbuzz(n):\n    out = []\n    for i in range(1, n + 1):\n"
          "        out.append('FizzBuzz' if i % 15 == 0 else 'Fizz' if i % 3 == 0 else 'Buzz' if i % 5 == 0 else str(i))\n"
          "    return out",
          "def fizzbuzz(n):\n    return [str(i) for i in range(1, n + 1)]"),
    _code("code-flatten", "flatten(xs)", "flatten arbitrarily nested lists into one list, keeping the order.",
          "assert flatten([1, [2, [3, [4]], 5]]) == [1, 2, 3, 4, 5]\nassert flatten([]) == []\n"
          "assert flatten([[[]], 'ab']) == ['ab']",
          "def flatten(xs):\n    out = []\n    for x in xs:\n"
          "        out.extend(flatten(x) if isinstance(x, list) else [x])\n    return out",
          "def flatten(xs):\n    return [y for x in xs for y in (x if isinstance(x, list) else [x])]"),
    _code("code-roman", "to_roman(n)", "return the Roman numeral for 1 <= n <= 3999.",
          "assert to_roman(1) == 'I'\nassert to_roman(4) == 'IV'\nassert to_roman(1994) == 'MCMXCIV'\n"
          "assert to_roman(3999) == 'MMMCMXCIX'",
          "def to_roman(n):\n    vals = [(1000, 'M'), (900, 'CM'), (500, 'D'), (400, 'CD'), (100, 'C'), (90, 'XC'),\n"
          "            (50, 'L'), (40, 'XL'), (10, 'X'), (9, 'IX'), (5, 'V'), (4, 'IV'), (1, 'I')]\n"
          "    out = ''\n    for v, s in vals:\n        while n >= v:\n            out += s\n            n -= v\n"
          "    return out",
          "def to_roman(n):\n    return 'I' * n"),
    _code("code-merge-intervals", "merge(intervals)",
          "merge overlapping [start, end] intervals and return them sorted by start.",
          "assert merge([[1, 3], [2, 6], [8, 10], [15, 18]]) == [[1, 6], [8, 10], [15, 18]]\n"
          "assert merge([[1, 4], [4, 5]]) == [[1, 5]]\nassert merge([]) == []\n"
          "assert merge([[5, 6], [1, 2]]) == [[1, 2], [5, 6]]",
          "def merge(intervals):\n    out = []\n    for s, e in sorted(intervals):\n"
          "        if out and s <= out[-1][1]:\n            out[-1][1] = max(out[-1][1], e)\n"
          "        else:\n            out.append([s, e])\n    return out",
          "def merge(intervals):\n    return sorted(intervals)"),
    _math("math-add", "What is 17 + 25?", 42, "17 + 25 = 32\nAnswer: 32"),
    _math("math-multiply", "What is 12 * 13?", 156, "12 * 13 is 146."),
    _math("math-percent", "What is 15% of 240?", 36, "15% of 240 is 24.\nAnswer: 24"),
    _math("math-apples", "Sam has 3 boxes of 12 apples and gives away 7 apples. How many apples does Sam have left?",
          29, "3 boxes of 12 is 36 apples.\nAnswer: 36"),
    _math("math-fraction", "What is 1/2 + 1/3, as a fraction in lowest terms?", "5/6",
          "1/2 + 1/3 = 2/5\nAnswer: 2/5"),
    _math("math-speed", "A train travels 180 km in 2.5 hours. What is its average speed in km/h?", 72,
          "180 / 2.5 = 70\nAnswer: 70"),
    _math("math-sum-range", "What is the sum of the integers from 1 to 100?", 5050, "The sum is 5000."),
    Task("inst-lowercase", "instruct", "Describe the sea in one sentence, using only lowercase letters.",
         c.all_of(c.lowercase, c.word_count(3, 40)), "the sea is wide, deep and always moving.",
         "The Sea is wide, deep and always moving."),
    Task("inst-three-bullets", "instruct",
         "List exactly three fruits as a bulleted list, one per line starting with '- ', and write nothing else.",
         c.all_of(c.bullets(3), c.lines(3)), "- apple\n- pear\n- plum", "Here are some fruits:\n- apple\n- pear"),
    Task("inst-json", "instruct",
         'Return a JSON object with exactly the keys "name" and "age" for a person called Ada who is 36. '
         "Output only the JSON.",
         c.all_of(c.json_object("name", "age"), c.contains("Ada", "36")), '{"name": "Ada", "age": 36}',
         '{"name": "Ada", "age": 36, "city": "London"}'),
    Task("inst-uppercase-word", "instruct", "Reply with the word hello in capital letters and nothing else.",
         c.all_of(c.uppercase, c.word_count(1, 1), c.contains("hello")), "HELLO", "Hello"),
    Task("inst-no-commas", "instruct", "Write two sentences about cats without using any commas.",
         c.all_of(c.no_commas, c.word_count(6, 60), c.contains("cat")),
         "Cats sleep most of the day. They hunt at night when the house is quiet.",
         "Cats sleep, eat and play. They hunt at night."),
    Task("inst-greeting", "instruct",
         "Write a short greeting to a team that starts with 'Dear team' and ends with 'Best regards'.",
         c.all_of(c.starts_with("Dear team"), c.ends_with("Best regards"), c.word_count(4, 80)),
         "Dear team, thank you for a great week. Best regards",
         "Hello everyone, thank you for a great week. Best regards"),
]
