// One linter for the whole tree: ESLint with typescript-eslint's recommended rules, plus the house
// rules of ../shared/STYLE.md that a linter can hold (no enum/namespace, type-only imports, and core
// packages free of Node APIs so they also run in a browser).
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

const nodeOnly = [
  'apps/**',
  'examples/**',
  '**/bench/**',
  '**/*.config.ts',
  '*.ts',
  '*.js',
  'packages/sdk/src/node/**',
  'packages/*/test/**',
  'scripts/**',
];

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', '**/.turbo/**', 'bench-results/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { ecmaVersion: 2023, sourceType: 'module' },
    rules: {
      'no-restricted-syntax': [
        'error',
        { selector: 'TSEnumDeclaration', message: 'Use an `as const` object, not enum (STYLE.md).' },
        { selector: 'TSModuleDeclaration[kind="namespace"]', message: 'No namespaces (STYLE.md).' },
      ],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'separate-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-constant-condition': ['error', { checkLoops: false }],
      eqeqeq: ['error', 'always'],
    },
  },
  {
    // Plain JavaScript here is Node tooling (scripts, configs, fixture packages).
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: { globals: globals.node },
  },
  {
    files: ['packages/*/src/**/*.ts'],
    ignores: nodeOnly,
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ['node:*'], message: 'Core packages are platform-neutral (DESIGN.md).' }] },
      ],
    },
  },
);
