// @ts-check
const js = require('@eslint/js');
const { defineConfig } = require('eslint/config');
const tseslint = require('typescript-eslint');
const prettierRecommended = require('eslint-plugin-prettier/recommended');
const globals = require('globals');
const jupyterPlugin = require('@jupyter/eslint-plugin');

module.exports = defineConfig([
  {
    ignores: [
      'node_modules',
      'dist',
      'coverage',
      'lib',
      'jupyter_tfenv',
      '**/*.js',
      '**/*.d.ts',
      '.venv',
      // Python-side catalog format, not a JupyterLab settings schema
      'schema/catalog.schema.json'
    ]
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    plugins: {
      jupyter: jupyterPlugin
    }
  },
  jupyterPlugin.configs.recommended,
  {
    files: ['**/*.ts', '**/*.tsx'],
    languageOptions: {
      globals: {
        ...globals.browser,
        ...globals.es2015,
        ...globals.node
      },
      parserOptions: {
        // tsconfig.test.json: all of src, the jest specs included
        project: 'tsconfig.test.json',
        sourceType: 'module'
      }
    },
    rules: {
      '@typescript-eslint/naming-convention': [
        'error',
        {
          selector: 'interface',
          format: ['PascalCase'],
          custom: {
            regex: '^I[A-Z]',
            match: true
          }
        }
      ],
      '@typescript-eslint/no-unused-vars': ['warn', { args: 'none' }],
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-namespace': 'off',
      '@typescript-eslint/no-use-before-define': 'off',
      curly: ['error', 'all'],
      eqeqeq: 'error',
      'prefer-arrow-callback': 'error'
    }
  },
  {
    // Node scripts of the build and CI (scripts/ts-cycles.mjs)
    files: ['**/*.mjs'],
    languageOptions: {
      globals: { ...globals.node },
      sourceType: 'module'
    }
  },
  {
    // The whole extension is one small chunk that the app needs at start-up
    // (sidebar, status bar, notebook tracking); splitting it into lazily
    // loaded pieces would only add requests.
    files: ['src/plugins/*.ts'],
    rules: { 'jupyter/prefer-lazy-imports': 'off' }
  },
  prettierRecommended
]);
